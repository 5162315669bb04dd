// pae-residuals: what a PAE's data-likelihood score is made of, per image, for an analysis of
// residual models outside the program (bench/residual_models.py; docs/results/data_likelihood.md).
//   pae-residuals --ae-run RUN --flow FLOW --out DIR SET...
// For each evaluation set (pae-eval's names: fashion-mnist:val, mnist:test, noise, ...; first
// 10,000 images) writes DIR/<set>_x.npy and DIR/<set>_recon.npy (images and reconstructions,
// [N, pixels] float32) and DIR/<set>_log_p_z.npy ([N] float64). Not built by default:
// `ninja -C build pae-residuals`.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include "pae/data/npy.h"
#include "pae/eval/evaluate.h"
#include "pae/eval/pae.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/runtime.h"
#include "pae/util/text.h"

int main(int argc, char** argv) {
  pae::init_program();
  CLI::App app{"pae-residuals: images, reconstructions and log p(z) of evaluation sets, as .npy"};
  std::string ae_run, flow, out;
  std::vector<std::string> sets;
  int64_t limit = 10000;
  app.add_option("--ae-run", ae_run, "auto-encoder run directory")->required();
  app.add_option("--flow", flow, "flow run directory")->required();
  app.add_option("--out", out, "output directory")->required();
  app.add_option("--limit", limit, "first N images of each set")->check(CLI::PositiveNumber);
  app.add_option("sets", sets, "evaluation sets, as pae-eval ood names them")->required();
  CLI11_PARSE(app, argc, argv);
  return pae::run_guarded([&] {
    auto pae = pae::eval::Pae::load(ae_run, flow);
    pae::fs::create_directories(out);
    for (const auto& spec : sets) {
      const auto set = pae::eval::load_set(spec, pae.config(), pae.image_shape(), limit);
      const auto prefix = out + "/" + pae::file_safe(spec);
      pae::data::write_npy(prefix + "_x.npy", set.images.flatten(1).contiguous());
      pae::data::write_npy(prefix + "_recon.npy", pae.reconstruct(set.images).flatten(1).contiguous());
      pae::data::write_npy(prefix + "_log_p_z.npy", pae.log_p_z(pae.encode(set.images)).contiguous());
      spdlog::info("{}: {} images -> {}_{{x,recon,log_p_z}}.npy", spec, set.size(), prefix);
    }
    return 0;
  });
}
