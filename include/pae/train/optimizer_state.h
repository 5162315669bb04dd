// An optimizer's per-parameter state (Adam's moments, SGD's momentum) in checkpoints, read the same
// way under every LibTorch version.
//
// LibTorch writes the state keyed by each parameter's TensorImpl address: 1.x as the address
// printed by a stream ("0x55d0c0a1b2c0"), 2.x as a decimal number, and 2.x's own reader parses the
// key with std::stoull, which reads every 1.x key as 0: a run checkpointed under 1.13 and resumed
// under 2.x would get its moments mixed up. Here the saved keys are only compared as strings, each
// parameter's saved key taken from the same archive's parameter list, so either form loads.
#pragma once
#include <ATen/core/Tensor.h>

#include <sstream>
#include <string>
#include <type_traits>

namespace torch::optim {
class Optimizer;
}
namespace torch::serialize {
class InputArchive;
}

namespace pae::train {

/// The key of parameter p in an optimizer's state map (StateMap = decltype(optimizer.state())):
/// a string of its TensorImpl address in LibTorch 1.x, the address itself in 2.x.
template <typename StateMap>
typename StateMap::key_type state_key(const at::Tensor& p) {
  using Key = typename StateMap::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream os;  // c10::guts::to_string's format
    os << p.unsafeGetTensorImpl();
    return os.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

/// Restores into `optimizer` (Adam, AdamW or SGD, as make_optimizer builds them) the per-parameter
/// state of an archive that LibTorch's Optimizer::save wrote, under any LibTorch version: each
/// parameter of each group gets the state saved for the parameter at the same place. The groups'
/// options are not restored (the engine sets learning rates each epoch), as LibTorch 1.x did not.
/// A different number of groups or parameters is an error naming `source`.
void load_optimizer_state(torch::serialize::InputArchive& archive, torch::optim::Optimizer& optimizer,
                          const std::string& source);

}  // namespace pae::train
