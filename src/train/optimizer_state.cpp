#include "pae/train/optimizer_state.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>

#include <memory>

#include "pae/util/error.h"

namespace pae::train {

namespace {

/// A fresh per-parameter state of the optimizer's kind, for the archive to fill.
std::unique_ptr<torch::optim::OptimizerParamState> empty_state(torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<torch::optim::Adam*>(&optimizer)) return std::make_unique<torch::optim::AdamParamState>();
  if (dynamic_cast<torch::optim::AdamW*>(&optimizer)) return std::make_unique<torch::optim::AdamWParamState>();
  if (dynamic_cast<torch::optim::SGD*>(&optimizer)) return std::make_unique<torch::optim::SGDParamState>();
  throw std::logic_error("load_optimizer_state: an optimizer that make_optimizer does not build");
}

int64_t read_count(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor t;
  archive.read(key, t);
  return t.item<int64_t>();
}

}  // namespace

void load_optimizer_state(torch::serialize::InputArchive& archive, torch::optim::Optimizer& optimizer,
                          const std::string& source) {
  torch::serialize::InputArchive saved_states, saved_groups;
  archive.read("state", saved_states);
  archive.read("param_groups", saved_groups);
  auto& groups = optimizer.param_groups();
  const int64_t n_groups = read_count(saved_groups, "param_groups/size");
  require(n_groups == int64_t(groups.size()), source + ": the optimizer state has " + std::to_string(n_groups) +
                                                  " parameter group(s), the optimizer " +
                                                  std::to_string(groups.size()));
  auto& state = optimizer.state();
  using StateMap = std::decay_t<decltype(state)>;
  state.clear();
  for (size_t i = 0; i < groups.size(); ++i) {
    torch::serialize::InputArchive saved_group;
    saved_groups.read("param_groups/" + std::to_string(i), saved_group);
    const auto& params = groups[i].params();
    const int64_t n_params = read_count(saved_group, "params/size");
    require(n_params == int64_t(params.size()), source + ": the optimizer state of parameter group " +
                                                    std::to_string(i) + " holds " + std::to_string(n_params) +
                                                    " parameters, the optimizer " + std::to_string(params.size()));
    for (size_t j = 0; j < params.size(); ++j) {
      c10::IValue key;
      saved_group.read("params/" + std::to_string(j), key);
      torch::serialize::InputArchive saved;
      // A parameter that never had a gradient has no state.
      if (!saved_states.try_read(key.toStringRef(), saved)) continue;
      auto s = empty_state(optimizer);
      s->serialize(saved);
      state[state_key<StateMap>(params[j])] = std::move(s);
    }
  }
}

}  // namespace pae::train
