// Checkpoints across LibTorch versions and devices: the optimizer state of a checkpoint written by
// LibTorch 1.13 (a committed fixture) and of one in LibTorch 2.x's form restores each parameter's
// own state, on the device under test (PAE_TEST_DEVICE).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <sstream>

#include "pae/train/checkpoint.h"
#include "pae/train/optim.h"
#include "pae/train/optimizer_state.h"
#include "pae/util/fs.h"
#include "test_util.h"

using namespace pae;

namespace {

/// Five parameters in three groups, as a run's optimizers hold them: "main" (Adam over a and b,
/// of one shape, so that a mix-up is not caught by shapes, and c, which never has a gradient and
/// so no state), "second" (AdamW over d), "third" (SGD with momentum over e). Values and
/// gradients are closed forms, with no random draw: every LibTorch version makes the same.
struct Fixture : torch::nn::Module {
  explicit Fixture(c10::Device device) {
    const auto init = [&](const char* name, std::vector<int64_t> shape, double offset) {
      int64_t n = 1;
      for (auto s : shape) n *= s;
      return register_parameter(name, (torch::arange(n, torch::kFloat32) * 0.1 + offset).reshape(shape).to(device));
    };
    a = init("a", {3, 2}, 0.5);
    b = init("b", {3, 2}, -0.25);
    c = init("c", {4}, 1.0);
    d = init("d", {2, 2}, 0.3);
    e = init("e", {5}, -1.0);
    train::OptimizerOptions adam, adamw, sgd;
    adam.lr = 0.01;
    adamw.name = "adamw";
    adamw.lr = 0.02;
    adamw.weight_decay = 0.1;
    sgd.name = "sgd";
    sgd.lr = 0.05;
    main = train::make_optimizer(adam, {a, b, c});
    second = train::make_optimizer(adamw, {d});
    third = train::make_optimizer(sgd, {e});
  }
  /// Steps first .. first + n - 1, each with its own gradients.
  void steps(int first, int n) {
    for (int s = first; s < first + n; ++s) {
      for (auto* o : {main.get(), second.get(), third.get()}) o->zero_grad();
      const auto loss = (a.pow(2) * (1 + s)).sum() + (b.pow(3) * 0.5).sum() + (d * d.sin() * (s + 2)).sum() +
                        (e.pow(2) * (0.1 * (3 - s))).sum();
      loss.backward();
      for (auto* o : {main.get(), second.get(), third.get()}) o->step();
    }
  }
  train::OptimizerMap optimizers() { return {{"main", main.get()}, {"second", second.get()}, {"third", third.get()}}; }

  torch::Tensor a, b, c, d, e;
  std::unique_ptr<torch::optim::Optimizer> main, second, third;
};

/// The state tensors of parameter p in `optimizer` (Adam's step, moments; SGD's momentum), on the
/// CPU; empty when p has no state.
std::vector<torch::Tensor> state_of(torch::optim::Optimizer& optimizer, const torch::Tensor& p) {
  auto& state = optimizer.state();
  const auto it = state.find(train::state_key<std::decay_t<decltype(state)>>(p));
  if (it == state.end() || !it->second) return {};
  if (const auto* s = dynamic_cast<const torch::optim::AdamParamState*>(it->second.get()))
    return {torch::tensor(s->step()), s->exp_avg().cpu(), s->exp_avg_sq().cpu()};
  if (const auto* s = dynamic_cast<const torch::optim::AdamWParamState*>(it->second.get()))
    return {torch::tensor(s->step()), s->exp_avg().cpu(), s->exp_avg_sq().cpu()};
  if (const auto* s = dynamic_cast<const torch::optim::SGDParamState*>(it->second.get()))
    return {s->momentum_buffer().cpu()};
  ADD_FAILURE() << "a state of an unexpected kind";
  return {};
}

/// Every parameter's state in `resumed` is the one `straight` holds for the same parameter; both
/// then take two more steps to the same parameters.
void expect_same_state_and_steps(Fixture& resumed, Fixture& straight, const std::string& what) {
  const std::vector<
      std::tuple<const char*, torch::optim::Optimizer*, torch::optim::Optimizer*, torch::Tensor, torch::Tensor>>
      params = {{"a", resumed.main.get(), straight.main.get(), resumed.a, straight.a},
                {"b", resumed.main.get(), straight.main.get(), resumed.b, straight.b},
                {"c", resumed.main.get(), straight.main.get(), resumed.c, straight.c},
                {"d", resumed.second.get(), straight.second.get(), resumed.d, straight.d},
                {"e", resumed.third.get(), straight.third.get(), resumed.e, straight.e}};
  for (const auto& [name, opt_r, opt_s, p_r, p_s] : params) {
    const auto got = state_of(*opt_r, p_r), want = state_of(*opt_s, p_s);
    ASSERT_EQ(got.size(), want.size()) << what << ": parameter " << name;
    EXPECT_EQ(want.empty(), std::string(name) == "c") << what << ": only c has no state";
    for (size_t k = 0; k < got.size(); ++k)
      EXPECT_TRUE(got[k].sizes() == want[k].sizes() && torch::allclose(got[k], want[k], 1e-6, 1e-7))
          << what << ": parameter " << name << ", state tensor " << k << "\n"
          << got[k] << "\nexpected\n"
          << want[k];
  }
  resumed.steps(3, 2);
  straight.steps(3, 2);
  for (const auto& [name, opt_r, opt_s, p_r, p_s] : params)
    EXPECT_TRUE(torch::allclose(p_r.cpu(), p_s.cpu(), 1e-6, 1e-7))
        << what << ": parameter " << name << " after resuming";
}

/// The optimizer's state as LibTorch 2.x writes it: keyed by the decimal TensorImpl address (1.x
/// prints it in hex), with each group's parameter list in the same form.
std::string save_in_libtorch2_form(torch::optim::Optimizer& optimizer) {
  const auto key = [](const torch::Tensor& p) {
    return std::to_string(reinterpret_cast<size_t>(p.unsafeGetTensorImpl()));
  };
  torch::serialize::OutputArchive out, states, groups;
  out.write("pytorch_version", c10::IValue("1.5.0"));
  auto& state = optimizer.state();
  const auto& param_groups = optimizer.param_groups();
  groups.write("param_groups/size", torch::tensor(int64_t(param_groups.size())));
  for (size_t i = 0; i < param_groups.size(); ++i) {
    torch::serialize::OutputArchive group, options;
    const auto& params = param_groups[i].params();
    group.write("params/size", torch::tensor(int64_t(params.size())));
    for (size_t j = 0; j < params.size(); ++j) {
      group.write("params/" + std::to_string(j), c10::IValue(key(params[j])));
      const auto it = state.find(train::state_key<std::decay_t<decltype(state)>>(params[j]));
      if (it == state.end()) continue;
      torch::serialize::OutputArchive s;
      it->second->serialize(s);
      states.write(key(params[j]), s);
    }
    param_groups[i].options().serialize(options);
    group.write("options", options);
    groups.write("param_groups/" + std::to_string(i), group);
  }
  out.write("state", states);
  out.write("param_groups", groups);
  std::ostringstream bytes;
  out.save_to(bytes);
  return bytes.str();
}

const std::string kFixture = std::string(PAE_SOURCE_DIR) + "/tests/fixtures/optimizer_state_libtorch113.pt";

}  // namespace

TEST(Checkpoint, OptimizerStateWrittenByLibTorch113RestoresEachParametersOwn) {
  // PAE_WRITE_FIXTURES=1 under LibTorch 1.13 (Debian's) writes the fixture again.
  if (std::getenv("PAE_WRITE_FIXTURES") && std::string(TORCH_VERSION).rfind("1.13", 0) == 0) {
    Fixture f(torch::kCPU);
    f.steps(0, 3);
    train::CheckpointState state;
    state.epoch = 3;
    state.model_signature = "optimizer_state_fixture";
    train::save_checkpoint(kFixture, f, f.optimizers(), state);
  }
  {  // The fixture holds LibTorch 1.x's keys (hex addresses), the form 2.x's own reader gets wrong.
    torch::serialize::InputArchive archive, optimizer, states;
    archive.load_from(kFixture);
    archive.read("optimizer.main", optimizer);
    optimizer.read("state", states);
    const auto keys = states.keys();
    ASSERT_EQ(keys.size(), 2u);  // a and b; c never had a gradient
    for (const auto& k : keys) EXPECT_EQ(k.rfind("0x", 0), 0u) << k;
  }
  PAE_DEVICE_UNDER_TEST(device);
  Fixture resumed(device), straight(device);
  const auto state = train::load_checkpoint(kFixture, resumed, resumed.optimizers(), "optimizer_state_fixture");
  EXPECT_EQ(state.epoch, 3);
  for (const auto& p : resumed.parameters()) EXPECT_EQ(p.device(), device) << "the model left its device";
  straight.steps(0, 3);
  expect_same_state_and_steps(resumed, straight, "1.13 fixture on " + device.str());
}

TEST(Checkpoint, OptimizerStateInLibTorch2sFormRestoresEachParametersOwn) {
  PAE_DEVICE_UNDER_TEST(device);
  Fixture written(device), resumed(device);
  written.steps(0, 3);
  using Member = std::unique_ptr<torch::optim::Optimizer> Fixture::*;
  for (Member optimizer : {&Fixture::main, &Fixture::second, &Fixture::third}) {
    const auto bytes = save_in_libtorch2_form(*(written.*optimizer));
    torch::serialize::InputArchive archive;
    archive.load_from(bytes.data(), bytes.size(), device);
    train::load_optimizer_state(archive, *(resumed.*optimizer), "test");
  }
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < written.parameters().size(); ++i) resumed.parameters()[i].copy_(written.parameters()[i]);
  }
  expect_same_state_and_steps(resumed, written, "LibTorch 2.x's form on " + device.str());
  // A state of other groups or sizes is an error that names the source.
  const auto bytes = save_in_libtorch2_form(*written.main);
  torch::serialize::InputArchive archive;
  archive.load_from(bytes.data(), bytes.size(), device);
  const auto msg = pae::testing::error_of([&] { train::load_optimizer_state(archive, *resumed.second, "SOURCE"); });
  EXPECT_NE(msg.find("SOURCE: the optimizer state of parameter group 0 holds 3 parameters, the optimizer 1"),
            std::string::npos)
      << msg;
}
