#include "pae/train/optim.h"

#include <torch/torch.h>

#include <cmath>

#include "pae/train/fused_adam.h"
#include "pae/util/error.h"
#include "pae/util/text.h"

namespace pae::train {

const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names = {"adam", "adamw", "sgd"};
  return names;
}

const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = {"constant", "cosine", "step"};
  return names;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerOptions& o, std::vector<at::Tensor> params) {
  if (o.name == "adam")
    return std::make_unique<FusedAdam>(
        params, torch::optim::AdamOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(o.weight_decay));
  if (o.name == "adamw")
    return std::make_unique<FusedAdamW>(
        params, torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(o.weight_decay));
  if (o.name == "sgd")
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
  throw Error("optimizer '" + o.name + "': unknown; valid names: " + joined(optimizer_names(), ", "));
}

double scheduled_lr(const OptimizerOptions& o, int64_t epoch_index, int64_t epochs) {
  if (epoch_index < o.warmup_epochs) return o.lr * double(epoch_index + 1) / double(o.warmup_epochs + 1);
  if (o.schedule == "cosine") {
    // Over the epochs after the warm-up (or each period of restart_epochs of them); the first
    // epoch of each runs at the full rate.
    const int64_t after = epoch_index - o.warmup_epochs;
    const int64_t period = o.restart_epochs > 0 ? o.restart_epochs : std::max<int64_t>(epochs - o.warmup_epochs, 1);
    const double t = double(after % period) / double(period);
    return o.lr * 0.5 * (1 + std::cos(M_PI * t));
  }
  if (o.schedule == "step" && o.decay_epoch > 0 && epoch_index >= o.decay_epoch) return o.lr * o.decay;
  if (o.schedule == "constant" || o.schedule == "step") return o.lr;
  throw Error("lr schedule '" + o.schedule + "': unknown; valid names: " + joined(schedule_names(), ", "));
}

namespace {

template <class Fn>
void for_each_lr(torch::optim::Optimizer& opt, Fn&& fn) {
  for (auto& group : opt.param_groups()) {
    auto& options = group.options();
    if (auto* a = dynamic_cast<torch::optim::AdamOptions*>(&options)) {
      fn(*a);
    } else if (auto* w = dynamic_cast<torch::optim::AdamWOptions*>(&options)) {
      fn(*w);
    } else if (auto* s = dynamic_cast<torch::optim::SGDOptions*>(&options)) {
      fn(*s);
    } else {
      throw std::logic_error("set_lr: an optimizer that make_optimizer does not build");
    }
  }
}

}  // namespace

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for_each_lr(opt, [&](auto& options) { options.lr(lr); });
}

double get_lr(torch::optim::Optimizer& opt) {
  double lr = 0;
  for_each_lr(opt, [&](auto& options) { lr = options.lr(); });
  return lr;
}

}  // namespace pae::train
