// Optimizers by name and learning-rate schedules, one per parameter group.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace pae::train {

/// One parameter group's optimizer and schedule (the config's train section fills it).
struct OptimizerOptions {
  std::string name = "adam";  ///< adam | adamw | sgd
  double lr = 1e-3;
  double weight_decay = 0.0;          ///< adam: L2 added to the gradient; adamw: decoupled; sgd: L2
  double momentum = 0.9;              ///< sgd
  double beta1 = 0.9, beta2 = 0.999;  ///< adam, adamw
  std::string schedule = "constant";  ///< constant | cosine | step
  int64_t restart_epochs = 0;         ///< cosine: restart every this many epochs (0: one cosine over the run)
  int64_t warmup_epochs = 0;          ///< linear warm-up from lr / (warmup + 1), before the schedule
  int64_t decay_epoch = 0;            ///< step: multiply by `decay` from this epoch (0-based index)
  double decay = 0.1;
  double grad_clip = 0.0;  ///< max gradient norm of the group (0 = off)
};

/// Valid optimizer and schedule names, for config checks and error messages.
const std::vector<std::string>& optimizer_names();
const std::vector<std::string>& schedule_names();

/// Builds the optimizer named by options.name over `params`; an unknown name is an error
/// listing the valid ones.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerOptions& options,
                                                        std::vector<at::Tensor> params);

/// Learning rate of epoch `epoch_index` (0-based) of a phase of `epochs` epochs.
double scheduled_lr(const OptimizerOptions& options, int64_t epoch_index, int64_t epochs);

/// Sets the learning rate of every parameter group of an optimizer made by make_optimizer.
void set_lr(torch::optim::Optimizer& optimizer, double lr);

/// The learning rate of the optimizer's first parameter group.
double get_lr(torch::optim::Optimizer& optimizer);

}  // namespace pae::train
