// pae-eval inpaint / denoise: their shared flags, and the corruption and likelihood they name.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "pae/data/corruption.h"
#include "pae/eval/restore.h"
#include "pae/inference/posterior.h"

namespace pae::programs {

struct RestoreFlags {
  eval::RestoreOptions options;
  std::string mask = "left", set, likelihood = "gaussian";
  double noise_sigma = 0.5;
  bool noclip = false;
  int64_t n = 256;

  /// Adds both subcommands' flags; `common` adds the flags every pae-eval measurement takes.
  void add(CLI::App* inpaint, CLI::App* denoise, const std::function<void(CLI::App*)>& common) {
    for (auto* sub : {inpaint, denoise}) {
      common(sub);
      sub->add_option("--set", set, "images to corrupt and restore (default: the AE's own dataset, test split)");
      sub->add_option("--n", n, "first N images of the set")->check(CLI::PositiveNumber);
      sub->add_option("--steps", options.map.steps, "Adam steps of the MAP per restart")->check(CLI::NonNegativeNumber);
      sub->add_option("--restarts", options.map.restarts, "MAP restarts (the first at the prior's mode)")
          ->check(CLI::PositiveNumber);
      sub->add_option("--lr", options.map.lr, "first learning rate of the MAP (decays to --lr-final)")
          ->check(CLI::PositiveNumber);
      sub->add_option("--lr-final", options.map.lr_final, "last learning rate of the MAP")->check(CLI::PositiveNumber);
      sub->add_option("--samples", options.samples, "posterior samples per image")->check(CLI::Range(2, 100000));
      sub->add_option("--chain-steps", options.chain.steps,
                      "Metropolis-adjusted Langevin steps refining each Laplace sample (0: none)")
          ->check(CLI::NonNegativeNumber);
      sub->add_option("--chain-step", options.chain.step, "the chain's step in Laplace-whitened units")
          ->check(CLI::PositiveNumber);
      sub->add_option("--likelihood", likelihood, "gaussian | bernoulli (masks; for BCE-trained decoders)");
      sub->add_option("--seed", options.seed, "seed of the corruption, the restarts and the samples");
    }
    inpaint->add_option("--mask", mask, "left | right | top | bottom | columns:A-B | center:S | random:F | png:PATH");
    denoise->add_option("--sigma", noise_sigma, "noise sigma on [0, 1] pixels")->check(CLI::PositiveNumber);
    denoise->add_flag("--noclip", noclip, "do not clip the noisy pixels to [0, 1]");
  }
  /// The corruption the flags name (inpainting's mask, or denoising's noise), and the likelihood.
  data::Corruption corruption(bool inpainting, const std::vector<int64_t>& image_shape) {
    options.map.likelihood = inference::parse_likelihood(likelihood, "--likelihood");
    return data::parse_corruption(
        inpainting ? mask : "noise:" + eval::number_text(noise_sigma) + (noclip ? ":noclip" : ""), image_shape);
  }
};

}  // namespace pae::programs
