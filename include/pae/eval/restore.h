// Inpainting and denoising with uncertainty on a Pae bundle: MAP in the flow's Gaussian space
// (or in latent space under N(0, I) without a flow), a Laplace posterior around it, per-pixel
// posterior mean and std, baselines, and calibration of the intervals.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "pae/data/corruption.h"
#include "pae/inference/posterior.h"

namespace pae::eval {

class Pae;

struct RestoreOptions {
  inference::MapOptions map;      ///< also the likelihood (Gaussian, or Bernoulli for masks)
  int64_t samples = 32;           ///< posterior samples per image (Laplace, then the chain's when it runs)
  inference::ChainOptions chain;  ///< optional Metropolis-adjusted Langevin chain from the Laplace samples
  uint64_t seed = 0;              ///< corruption, restarts and samples
};

/// Everything a restoration produced, on the CPU, float32; images [N,C,H,W] in [0, 1].
struct Restoration {
  at::Tensor truth, corrupted;
  at::Tensor kept;                ///< bool: pixels taken as they are (a mask's observed pixels; none for noise)
  at::Tensor map;                 ///< decoder at the MAP; observed pixels kept for masks
  at::Tensor mean, std;           ///< posterior mean and std per pixel (Laplace samples)
  at::Tensor samples;             ///< [N,S,C,H,W] the posterior samples (images)
  at::Tensor sigma;               ///< [C,H,W] the likelihood's per-pixel sigma (residual and noise)
  at::Tensor residual_sigma;      ///< [C,H,W] the AE's residual sigma alone: a clean pixel's spread around g(u)
  at::Tensor mean_fill, ae_fill;  ///< baselines: training-mean image; the AE on the corrupted image
  at::Tensor objective;           ///< [N] negative log posterior at the MAP
  double accepted = 1;            ///< the posterior chain's acceptance rate (1 without a chain)
  std::string residual_source;    ///< where the residual sigma came from (a stored file, or computed)
};

/// The AE's per-pixel residual RMS on `n` validation images (floored at 1e-3); the likelihood's
/// sigma is this, in quadrature with the noise sigma of a noise corruption.
at::Tensor residual_sigma(Pae& pae, int64_t n = 2000);

/// residual_sigma, computed once per checkpoint and stored with the AE run: RUN/residual_sigma/
/// <checkpoint>.npy beside a .json naming the set, the image count and a checksum of the loaded
/// weights. A stored one is used only when all three match; otherwise (the run was retrained or
/// resumed since) it is computed again and replaced. A bundle made in memory computes it every
/// time. `source` (optional) says which happened.
at::Tensor stored_residual_sigma(Pae& pae, int64_t n = 2000, std::string* source = nullptr);

/// A checksum of a bundle's auto-encoder weights (parameters and buffers, in order).
std::string weights_checksum(Pae& pae);

/// Restores `truth` corrupted by `c`. Missing pixels of masks are filled; with noise every pixel.
Restoration restore(Pae& pae, const at::Tensor& truth, const data::Corruption& c, const RestoreOptions& options);

/// Fraction of the true (clean) pixels that `r`'s central Gaussian intervals (posterior mean +-
/// z_p sqrt(posterior var + residual_sigma^2)) cover, on the restored pixels (not kept), for each
/// level p. The noise of a noisy observation is not part of a clean pixel's interval.
std::vector<double> coverage(const Restoration& r, const std::vector<double>& levels);

/// Mean squared error of `estimate` against the truth on the restored pixels (the missing ones
/// for masks, every pixel for noise).
double corrupted_mse(const Restoration& r, const at::Tensor& estimate);

/// Writes a restoration to `dir` (created): restore.json (corruption spec and seed, MAP options,
/// MSE and PSNR on the restored pixels of the MAP, the posterior mean and both baselines, the
/// 68% / 95% coverage and a reliability curve, seconds), panels.png (per image: truth,
/// corrupted, MAP, posterior mean, std scaled to its maximum, three samples) and one .npy per
/// array. Returns restore.json's text.
std::string write_restoration(Pae& pae, const Restoration& r, const data::Corruption& c, const RestoreOptions& options,
                              double seconds, const std::string& dir);

/// `v` as the shortest text that reads back ("0.5", not "0.500000").
std::string number_text(double v);

/// The default report folder of a corruption: inpaint_<mask> or denoise_<sigma>, characters other
/// than letters, digits, '.', '-' and '_' replaced by '_'.
std::string restore_folder(const data::Corruption& c);

/// pae-eval inpaint / denoise: restores the first n images of `set` (empty: the AE's own test
/// split), times it, writes everything to `dir` (write_restoration) and returns a one-line summary.
std::string run_restore(Pae& pae, const std::string& set, int64_t n, const data::Corruption& c,
                        const RestoreOptions& options, const std::string& dir);

}  // namespace pae::eval
