// What the training engine (pae/train/engine.h) runs: the Trainable interface and the
// StepContext a trainable steps its optimizers through.
//
// A trainable declares named parameter groups (each gets its own optimizer and learning-rate
// schedule from the config), its phases, and owns its step: in train_step it computes losses
// and calls ctx.step("group", loss) for each optimizer it wants stepped (zero-grad, backward,
// clipping and the step happen there), and ctx.log("term", value) for what the metrics show.
// Terms are keyed by name: a step may log a different set of terms than the one before.
//
// The interface lives below models/ and flows/ (they implement it); the engine that drives it
// lives in train/.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}
namespace torch::serialize {
class OutputArchive;
class InputArchive;
}  // namespace torch::serialize

namespace pae::nn {

/// One training batch: inputs and (where the data has them) labels, on the training device.
struct Batch {
  at::Tensor x;  ///< [B, ...]
  at::Tensor y;  ///< [B] int64, or undefined
  int64_t size() const { return x.size(0); }
};

/// A phase of training: a name and its number of epochs. Most trainables have one.
struct Phase {
  std::string name;
  int64_t epochs = 0;
  int64_t patience = -1;  ///< early stopping of this phase (-1: the engine's setting, 0: off)
  int64_t batches = 0;    ///< at most this many batches per epoch (0: a full pass over the data)
};

/// The quantity that picks the best checkpoint and drives early stopping: looked up in the
/// validation terms, else (no validation data) in the epoch's training terms.
struct Monitor {
  std::string name = "loss";
  bool minimize = true;
};

/// Named scalar terms, e.g. {"loss": 0.01, "mse": 0.01}.
using Terms = std::map<std::string, double>;

/// The named parts of a loss (for messages about it), e.g. {"mse", ...}, {"kl", ...}.
using TensorTerms = std::vector<std::pair<std::string, at::Tensor>>;

/// Handed to Trainable::train_step by the engine for one batch.
class StepContext {
 public:
  virtual ~StepContext() = default;
  /// Zero-grads the group's parameters, back-propagates `loss` (a scalar), clips the group's
  /// gradient norm (when configured) and steps the group's optimizer. Gradients that `loss`
  /// leaves in other groups' parameters are cleared by their own next step.
  /// `parts` (optional) are the loss's named terms: a non-finite loss is reported by the term(s)
  /// that made it so.
  virtual void step(const std::string& group, const at::Tensor& loss, const TensorTerms& parts) = 0;
  void step(const std::string& group, const at::Tensor& loss) { step(group, loss, {}); }
  /// Records a batch-mean scalar (detached by the engine); the epoch reports its mean over the
  /// batches that logged it, weighted by batch size. Read back once per epoch, not per step.
  virtual void log(const std::string& term, const at::Tensor& value) = 0;
  virtual const std::string& phase() const = 0;
  virtual int64_t phase_index() const = 0;
  virtual int64_t epoch() const = 0;        ///< 1-based, over all phases
  virtual int64_t global_step() const = 0;  ///< optimizer steps taken by the engine so far (batches)
  virtual c10::Device device() const = 0;
};

/// Something the engine can train.
class Trainable {
 public:
  virtual ~Trainable() = default;
  /// The module whose parameters and buffers the checkpoints hold.
  virtual torch::nn::Module& module() = 0;
  /// Named parameter groups; each gets its own optimizer. Groups must not share tensors.
  virtual std::vector<std::pair<std::string, std::vector<at::Tensor>>> parameter_groups() = 0;
  /// The phases, given the configured number of epochs (single-phase trainables: all of them).
  virtual std::vector<Phase> phases(int64_t epochs) const { return {{"train", epochs}}; }
  /// One batch: compute losses, call ctx.step(group, loss) per optimizer, ctx.log the terms.
  virtual void train_step(const Batch& batch, StepContext& ctx) = 0;
  /// Validation terms after each epoch, on the whole validation set `data` (on the CPU; the
  /// trainable batches it by `batch_size` and moves it to its device). Model-owned: it sets
  /// evaluation mode and gradient mode itself (some trainables need gradients here).
  virtual Terms validate(const Batch& /*data*/, int64_t /*batch_size*/) { return {}; }
  /// What picks the best checkpoint and stops early.
  virtual Monitor monitor() const { return {}; }
  /// Identifies the architecture in checkpoints (type, sizes); a mismatch is refused on load.
  virtual std::string signature() const = 0;
  /// n samples from the model (images for auto-encoders, points for flows); not every
  /// trainable is generative.
  virtual at::Tensor sample(int64_t /*n*/) { throw std::logic_error(signature() + " does not sample"); }
  /// State beyond parameters and buffers that a resume must restore (e.g. a replay buffer).
  virtual void save_state(torch::serialize::OutputArchive& /*archive*/) {}
  virtual void load_state(torch::serialize::InputArchive& /*archive*/) {}
};

}  // namespace pae::nn
