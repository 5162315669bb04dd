// Checkpoints: model + optimizer + epoch + RNG state, written atomically.
#pragma once
#include <string>

namespace torch::optim {
class Optimizer;
}
namespace torch::nn {
class Module;
}

namespace pae::train {

/// Scalar progress stored beside the weights.
struct CheckpointState {
  int64_t epoch = 0;          ///< epochs completed
  double best_val = 1e300;    ///< best validation loss so far
  std::string model_signature;  ///< model type/arch/latent/shape, checked on load
};

/// Saves `model`, `optimizer` (may be null), `state` and LibTorch's CPU RNG state to `path`.
void save_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const CheckpointState& state);

/// Loads into `model` (and `optimizer` when not null) and restores the RNG state. Errors name
/// the file: unreadable, not a checkpoint, or written by a different model (signature).
CheckpointState load_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                                const std::string& expected_signature);

}  // namespace pae::train
