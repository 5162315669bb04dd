// Random draws per sample of a training batch that do not depend on how the batch is split over
// ranks. The engine opens a SampleNoiseScope around each training step, naming this rank's rows
// of the step's global batch; inside it sample_randn_like and sample_randint draw the whole
// global batch's values from a generator seeded by (seed, step) and return this rank's rows, so
// that a sample gets the same noise in a single process and on whichever rank holds it (the VAE's
// posterior sample, the AAE's prior draws, a flow's latent noise). Outside a scope (sampling,
// evaluation) they are the default generator's randn_like and randint. The engine validates in
// an unsplit scope of its own (step -1): every epoch's validation sees the same noise, the same
// on every rank.
//
// Draws in a step follow one another on the step's generator: every rank makes the same draws
// in the same order (their shapes are the global batch's), so the streams stay in step. Dropout
// and augmentation are not per sample: they stay on each rank's own stream.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>

namespace pae::nn {

class SampleNoiseScope {
 public:
  /// This rank's rows [offset, offset + size) of a global batch of `global_size` samples at
  /// optimizer step `step` of a run seeded with `seed`; global_size 0: draws are not split (each
  /// is the shape asked for; validation). Scopes are per thread and do not nest.
  SampleNoiseScope(uint64_t seed, int64_t step, int64_t offset, int64_t global_size);
  ~SampleNoiseScope();
  SampleNoiseScope(const SampleNoiseScope&) = delete;
  SampleNoiseScope& operator=(const SampleNoiseScope&) = delete;
  struct State;

 private:
  std::unique_ptr<State> state_;
};

/// Standard normal noise shaped like `rows` ([B, ...], this rank's rows of the batch).
at::Tensor sample_randn_like(const at::Tensor& rows);
/// n integers uniform in [0, high), int64 on the CPU, one per row of this rank's part.
at::Tensor sample_randint(int64_t high, int64_t n);

}  // namespace pae::nn
