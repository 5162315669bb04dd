// Langevin dynamics on an energy: the sampler of the NAE's negative samples (latent chains on
// the sphere, then data-space chains) and of posterior inference. Library code, not part of any
// model class.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <functional>

namespace pae::inference {

/// Energy of a batch: x:[B,...] -> E:[B] (differentiable in x).
using Energy = std::function<at::Tensor(const at::Tensor&)>;

struct LangevinOptions {
  int64_t steps = 10;
  double step_size = 0.2;     ///< epsilon in x <- x - epsilon * grad E(x) / T + sigma_t * xi
  double noise = 0.05;        ///< sigma (the NAE paper's rule: an independent scale, not sqrt(2 epsilon))
  bool anneal_noise = false;  ///< sigma_t = sigma / (1 + t), t = 0, 1, ...
  double temperature = 1.0;   ///< T
  double grad_clip = 0.0;     ///< per-sample gradient norm limit (0 = off)
  bool clip_rows = false;     ///< apply grad_clip to each slice along the last axis instead (image rows)
  bool clamp = false;         ///< clamp to [clamp_min, clamp_max] after each step (pixels)
  double clamp_min = 0.0, clamp_max = 1.0;
  bool sphere = false;  ///< project each sample (row) back to the unit sphere after each step
  /// Metropolis-adjusted (MALA): each proposal is accepted with the Metropolis-Hastings
  /// probability for the target exp(-E / T) and the Gaussian proposal N(x - epsilon grad E / T,
  /// sigma^2), so the chain leaves that target invariant for any step (with sigma^2 = 2 epsilon T
  /// it is the classic MALA). Needs a constant noise and no clipping, clamping or projection.
  bool metropolis = false;
  /// A CPU generator for the chains' noise (drawn on the CPU, then moved to x's device), so that
  /// chains run on several threads stay reproducible; undefined: the global generator.
  at::Generator generator;
};

/// What a chain did, averaged over the batch.
struct LangevinStats {
  double energy_start = 0, energy_end = 0;  ///< mean energy before the first and after the last step
  double grad_norm = 0;                     ///< mean per-sample gradient norm over steps (before clipping)
  double clipped = 0;                       ///< fraction of per-sample (or per-row) gradients that were clipped
  double accepted = 1;                      ///< metropolis: fraction of proposals accepted
};

/// Runs the chains from x0 (any shape [B,...]; not modified) and returns the last state,
/// detached. Gradients are taken with respect to x only; the energy's parameters receive none.
/// The sphere projection also applies to x0.
at::Tensor langevin(const Energy& energy, const at::Tensor& x0, const LangevinOptions& options,
                    LangevinStats* stats = nullptr);

}  // namespace pae::inference
