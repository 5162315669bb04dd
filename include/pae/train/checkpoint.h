// Checkpoints: module, every parameter group's optimizer, the engine's progress, RNG state and
// a trainable's own extra state, written atomically. A checkpoint is the run's commit point.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>

namespace torch::optim {
class Optimizer;
}
namespace torch::nn {
class Module;
}
namespace torch::serialize {
class OutputArchive;
class InputArchive;
}  // namespace torch::serialize

namespace pae::train {

/// The engine's progress, stored beside the weights; round-trips exactly.
struct CheckpointState {
  int64_t epoch = 0;                                      ///< epochs completed, over all phases
  int64_t phase = 0;                                      ///< index of the phase in progress
  int64_t epoch_in_phase = 0;                             ///< epochs completed in that phase
  bool phase_stopped = false;                             ///< the phase ended early (patience)
  int64_t global_step = 0;                                ///< batches stepped so far
  double best = std::numeric_limits<double>::infinity();  ///< best monitored value, as minimised
  int64_t best_epoch = 0;
  int64_t stale = 0;                       ///< epochs since the monitored value last improved
  std::string model_signature;             ///< architecture, checked on load
  std::string config_yaml;                 ///< the run's resolved config when written (empty: not stored)
  std::map<std::string, double> lr_scale;  ///< per group, where train.nonfinite: reduce_lr halved it
};

/// What a checkpoint says about its run without loading a model: the resolved config it was
/// written under ("" for checkpoints from before configs were stored) and how far it got.
struct CheckpointHeader {
  std::string config_yaml;
  int64_t epoch = 0;           ///< epochs completed, over all phases
  int64_t phase = 0;           ///< index of the phase in progress
  int64_t epoch_in_phase = 0;  ///< epochs completed in that phase
};

/// Reads a checkpoint's header; errors name the file.
CheckpointHeader read_checkpoint_header(const std::string& path);

/// Optimizers by parameter-group name (may be empty: weights only).
using OptimizerMap = std::map<std::string, torch::optim::Optimizer*>;
using ArchiveWriter = std::function<void(torch::serialize::OutputArchive&)>;
using ArchiveReader = std::function<void(torch::serialize::InputArchive&)>;

/// Saves `module`, the optimizers, `state`, LibTorch's CPU RNG state and `extra`.
void save_checkpoint(const std::string& path, torch::nn::Module& module, const OptimizerMap& optimizers,
                     const CheckpointState& state, const ArchiveWriter& extra = nullptr);

/// Loads into `module` (and each optimizer of the map); with optimizers (a resume) it also
/// restores the RNG state, without (weights only) it leaves the RNG alone. Errors name
/// the file: unreadable, not a checkpoint, or written by another model (signature; an empty
/// expected signature skips that check).
CheckpointState load_checkpoint(const std::string& path, torch::nn::Module& module, const OptimizerMap& optimizers,
                                const std::string& expected_signature, const ArchiveReader& extra = nullptr);

/// The same from a whole checkpoint file's bytes (the fuzz target's way in); `source` names it.
CheckpointState load_checkpoint_bytes(const std::string& bytes, const std::string& source, torch::nn::Module& module,
                                      const OptimizerMap& optimizers, const std::string& expected_signature,
                                      const ArchiveReader& extra = nullptr);

}  // namespace pae::train
