// Adam and AdamW whose CPU step is one pass over each parameter (make_optimizer builds them).
#pragma once
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>

namespace pae::train {

/// torch::optim::Adam with the same options, state (AdamParamState) and serialisation, so
/// checkpoints and learning-rate changes are those of Adam. Its step updates each CPU
/// float/double parameter in one threaded pass (gradient, both moments, parameter) instead of
/// LibTorch's six tensor operations and their temporaries per parameter; the arithmetic is
/// Adam's, element by element (results agree to float rounding). Anything else (CUDA, amsgrad,
/// non-contiguous tensors) takes torch::optim::Adam::step.
class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  at::Tensor step(LossClosure closure = nullptr) override;
};

/// The same for AdamW (decoupled weight decay).
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  at::Tensor step(LossClosure closure = nullptr) override;
};

/// Whether every defined gradient of `params` is finite: CPU float/double gradients in one pass
/// each without tensor operations; others by one reduction each and one device sync.
bool gradients_finite(const std::vector<at::Tensor>& params);

}  // namespace pae::train
