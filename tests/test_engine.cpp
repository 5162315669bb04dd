// The training engine: parameter groups, phases, terms by name, resume, optimizers and
// schedules, and the graph-safe threaded Dense layer.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "pae/nn/blas.h"
#include "pae/nn/conv.h"
#include "pae/nn/dense.h"
#include "pae/report/sinks.h"
#include "pae/train/engine.h"
#include "pae/train/fused_adam.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/runtime.h"
#include "test_util.h"

using namespace pae;
using pae::testing::error_of;
using pae::testing::TempDir;

namespace {

/// Two parameter groups ("a": Adam, "b": plain SGD) and two phases ("warm": only "a" steps,
/// "joint": both). Each step checks that stepping one group leaves the other untouched, logs
/// terms whose set changes from step to step, and counts its steps in state that checkpoints
/// must carry.
class Toy : public torch::nn::Module, public nn::Trainable {
 public:
  explicit Toy(int64_t warm_epochs, c10::Device device = c10::Device(c10::kCPU)) : warm_(warm_epochs) {
    a = register_parameter("a", torch::randn({3}).to(device));
    b = register_parameter("b", torch::randn({3}).to(device));
  }
  torch::nn::Module& module() override { return *this; }
  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> parameter_groups() override {
    return {{"a", {a}}, {"b", {b}}};
  }
  std::vector<nn::Phase> phases(int64_t epochs) const override { return {{"warm", warm_}, {"joint", epochs - warm_}}; }
  torch::Tensor loss(const torch::Tensor& x) { return ((x.matmul(a) - x.matmul(b).pow(2)) - 1).pow(2).mean(); }

  void train_step(const nn::Batch& batch, nn::StepContext& ctx) override {
    if (crash_at_step >= 0 && ctx.global_step() == crash_at_step) throw std::runtime_error("killed");
    if (signal_at_step >= 0 && ctx.global_step() == signal_at_step) {
      ::kill(::getpid(), SIGTERM);  // to the process, as a scheduler sends it: handled on its own thread
      for (int i = 0; i < 10000 && pae::stop_signal() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    phases_seen.push_back(ctx.phase());
    const auto a0 = a.detach().clone(), b0 = b.detach().clone();
    if (ctx.global_step() == bad_at_step) {
      a_before_bad = a0;
      // A finite loss whose gradient is NaN (d sqrt(|t|) at t = 0), or a NaN loss.
      // The NaN loss comes with its named parts: the message names the part that is not finite.
      const auto nan = torch::tensor(std::numeric_limits<float>::quiet_NaN());
      if (bad_gradient)
        ctx.step("a", (a - a.detach()).abs().sqrt().sum() + loss(batch.x));
      else
        ctx.step("a", loss(batch.x) + nan, {{"fit", loss(batch.x).detach()}, {"penalty", nan}});
    } else {
      ctx.step("a", loss(batch.x));
    }
    const auto a1 = a.detach().clone();
    if (!torch::equal(b.detach(), b0)) ++foreign_changes;
    if (torch::equal(a1, a0)) ++missed_steps;
    if (ctx.phase() == "joint") {
      // Plain SGD: b must move by exactly -lr * dL/db at (a1, b0).
      auto bb = b0.clone().requires_grad_(true);
      auto l = ((batch.x.matmul(a1) - batch.x.matmul(bb).pow(2)) - 1).pow(2).mean();
      const auto expected = b0 - 0.01 * torch::autograd::grad({l}, {bb})[0];
      ctx.step("b", loss(batch.x));
      if (!torch::equal(a.detach(), a1)) ++foreign_changes;
      if (!torch::allclose(b.detach(), expected, 1e-6, 1e-7)) ++wrong_sgd_steps;
    }
    // A different set of terms from step to step: "even" on even steps, "odd" on odd ones
    // (with the step's own value), "joint_only" in phase 2.
    const double s = double(ctx.global_step());
    ctx.log(ctx.global_step() % 2 == 0 ? "even" : "odd", torch::tensor(s, torch::kFloat64));
    if (ctx.phase() == "joint") ctx.log("joint_only", torch::tensor(-s, torch::kFloat64));
    ctx.log("loss", loss(batch.x));
    ++steps_taken;
  }
  nn::Terms validate(const nn::Batch& data, int64_t) override {
    torch::NoGradGuard g;
    return {{"loss", loss(data.x).item<double>()}};
  }
  std::string signature() const override { return "toy"; }
  void save_state(torch::serialize::OutputArchive& archive) override {
    archive.write("steps_taken", torch::tensor(steps_taken, torch::kInt64));
  }
  void load_state(torch::serialize::InputArchive& archive) override {
    torch::Tensor t;
    archive.read("steps_taken", t);
    steps_taken = t.item<int64_t>();
  }

  torch::Tensor a, b;
  int64_t warm_;
  int64_t crash_at_step = -1, signal_at_step = -1, steps_taken = 0, foreign_changes = 0, missed_steps = 0,
          wrong_sgd_steps = 0;
  int64_t bad_at_step = -1;  ///< this step's loss (or, with bad_gradient, its gradient) is NaN
  bool bad_gradient = false;
  torch::Tensor a_before_bad;
  std::vector<std::string> phases_seen;
};

struct ToyRun {
  std::shared_ptr<Toy> toy;
  std::shared_ptr<report::MemorySink> sink;
};

train::TrainData toy_data(c10::Device device = c10::Device(c10::kCPU)) {
  torch::manual_seed(3);
  static const auto x = torch::randn({40, 3}) * 0.5;
  train::TrainData d;
  d.size = 30;  // batches of 8: 8, 8, 8, 6 (terms weighted by batch size)
  d.batch = [device](const torch::Tensor& idx) { return nn::Batch{x.index_select(0, idx).to(device), {}}; };
  d.validation = {x.slice(0, 30).to(device), {}};
  return d;
}

train::EngineOptions toy_options(const std::string& dir, int64_t epochs, bool resume, double ema = 0,
                                 c10::Device device = c10::Device(c10::kCPU)) {
  train::EngineOptions o;
  o.device = device;
  o.ema = ema;
  o.run_dir = dir;
  o.epochs = epochs;
  o.batch_size = 8;
  o.seed = 7;
  o.resume = resume;
  o.quiet = true;
  o.optimizers["a"] = train::OptimizerOptions{};  // adam 1e-3
  train::OptimizerOptions sgd;
  sgd.name = "sgd";
  sgd.lr = 0.01;
  sgd.momentum = 0;
  sgd.schedule = "constant";
  o.optimizers["b"] = sgd;
  return o;
}

ToyRun run_toy(const std::string& dir, int64_t epochs, bool resume, int64_t crash_at_step = -1,
               int64_t kill_after_metrics = -1, double ema = 0, c10::Device device = c10::Device(c10::kCPU)) {
  torch::manual_seed(11);
  ToyRun r{std::make_shared<Toy>(3, device), std::make_shared<report::MemorySink>()};
  r.toy->crash_at_step = crash_at_step;
  train::Engine engine(toy_options(dir, epochs, resume, ema, device),
                       {r.sink, std::make_shared<report::JsonLinesSink>(dir + "/metrics.jsonl"),
                        std::make_shared<pae::testing::KillAfterMetrics>(kill_after_metrics)});
  engine.fit(*r.toy, toy_data(device));
  return r;
}

}  // namespace

TEST(Engine, NonFiniteStepsStopBeforeTheUpdateOrAreSkippedAndCounted) {
  PAE_DEVICE_UNDER_TEST(device);
  for (const bool gradient : {false, true}) {
    SCOPED_TRACE(gradient ? "NaN gradient" : "NaN loss");
    pae::testing::TempDir tmp;
    torch::manual_seed(11);
    Toy toy(3, device);
    toy.bad_at_step = 5;  // epoch 2 (4 batches per epoch), its second step
    toy.bad_gradient = gradient;
    train::Engine stop(toy_options(tmp.file("stop"), 4, false, 0, device), {});
    const auto msg = pae::testing::error_of([&] { stop.fit(toy, toy_data(device)); });
    EXPECT_NE(msg.find(std::string("epoch 2, step 6: the ") + (gradient ? "gradient" : "loss") +
                       " of parameter group 'a' is not finite"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("checkpoints/last.pt, is intact"), std::string::npos) << msg;  // epoch 1's
    if (!gradient) EXPECT_NE(msg.find("; penalty = nan)"), std::string::npos) << msg;
    EXPECT_TRUE(torch::equal(toy.a.detach(), toy.a_before_bad)) << "the bad step must not update";
    EXPECT_TRUE(torch::isfinite(toy.a).all().item<bool>());

    torch::manual_seed(11);
    Toy skipping(3, device);
    skipping.bad_at_step = 5;
    skipping.bad_gradient = gradient;
    auto o = toy_options(tmp.file("skip"), 4, false, 0, device);
    o.nonfinite = "skip";
    auto sink = std::make_shared<report::MemorySink>();
    train::Engine engine(o, {sink});
    engine.fit(skipping, toy_data(device));
    ASSERT_EQ(sink->records.size(), 4u);
    const auto value = [&](size_t e, const std::string& key) {
      for (const auto& [k, v] : sink->records[e].values)
        if (k == key) return v;
      return -1.0;
    };
    for (size_t e = 0; e < 4; ++e) {
      EXPECT_EQ(value(e, "nonfinite_steps"), e == 1 ? 1.0 : 0.0) << e;
      EXPECT_EQ(value(e, "step"), 4.0 * double(e + 1)) << e;  // 4 batches per epoch
    }
    EXPECT_EQ(skipping.missed_steps, 1);                 // the skipped step left "a" as it was
    EXPECT_TRUE(std::isfinite(value(1, "train_loss")));  // the skipped batch's terms are not counted
  }
}

TEST(Engine, NonFiniteStepsUnderReduceLrHalveTheGroupsRateAcrossResume) {
  pae::testing::TempDir tmp;
  const auto run = [&](const std::string& dir, int64_t epochs, bool resume) {
    torch::manual_seed(11);
    auto toy = std::make_shared<Toy>(3);
    toy->bad_at_step = 5;  // epoch 2
    auto o = toy_options(dir, epochs, resume);
    o.nonfinite = "reduce_lr";
    auto sink = std::make_shared<report::MemorySink>();
    train::Engine(o, {sink}).fit(*toy, toy_data());
    return std::make_pair(toy, sink);
  };
  const auto [whole, sink] = run(tmp.file("whole"), 4, false);
  ASSERT_EQ(sink->records.size(), 4u);
  const auto value = [](const report::EpochRecord& r, const std::string& key) {
    for (const auto& [k, v] : r.values)
      if (k == key) return v;
    return -1.0;
  };
  // The rate at each epoch's start: 1e-3 until the bad step in epoch 2, half of it after; "b" untouched.
  const double lr_a[] = {1e-3, 1e-3, 5e-4, 5e-4};
  for (size_t e = 0; e < 4; ++e) {
    EXPECT_DOUBLE_EQ(value(sink->records[e], "lr_a"), lr_a[e]) << e;
    EXPECT_DOUBLE_EQ(value(sink->records[e], "lr_b"), 0.01) << e;
    EXPECT_EQ(value(sink->records[e], "nonfinite_steps"), e == 1 ? 1.0 : 0.0) << e;
  }
  EXPECT_EQ(whole->missed_steps, 1);
  // Stopped after epoch 3 and resumed: the halving comes back from the checkpoint.
  run(tmp.file("cut"), 3, false);
  const auto [resumed, resumed_sink] = run(tmp.file("cut"), 4, true);
  ASSERT_EQ(resumed_sink->records.size(), 1u);
  EXPECT_DOUBLE_EQ(value(resumed_sink->records[0], "lr_a"), 5e-4);
  EXPECT_TRUE(torch::equal(resumed->a, whole->a));
  EXPECT_TRUE(torch::equal(resumed->b, whole->b));
}

TEST(Engine, EachOptimizerStepsOnlyItsGroupThroughBothPhases) {
  TempDir tmp;
  auto r = run_toy(tmp.file("run"), 6, false);
  EXPECT_EQ(r.toy->steps_taken, 6 * 4);
  EXPECT_EQ(r.toy->foreign_changes, 0);
  EXPECT_EQ(r.toy->missed_steps, 0);
  EXPECT_EQ(r.toy->wrong_sgd_steps, 0);
  // 3 epochs of 4 batches in each phase, in order.
  ASSERT_EQ(r.toy->phases_seen.size(), 24u);
  EXPECT_EQ(r.toy->phases_seen[11], "warm");
  EXPECT_EQ(r.toy->phases_seen[12], "joint");
  // One record per epoch, named phases, one learning rate per group.
  ASSERT_EQ(r.sink->records.size(), 6u);
  EXPECT_EQ(r.sink->records[0].phase, "warm");
  EXPECT_EQ(r.sink->records[5].phase, "joint");
  EXPECT_DOUBLE_EQ(r.sink->records[0].get("lr_a"), 1e-3);
  EXPECT_DOUBLE_EQ(r.sink->records[0].get("lr_b"), 0.01);
}

TEST(Engine, TermsAreKeyedByNameWhenStepsLogDifferentSets) {
  TempDir tmp;
  auto r = run_toy(tmp.file("run"), 6, false);
  // Steps of epoch e are 4(e-1) .. 4(e-1)+3 with batch sizes 8, 8, 8, 6: "even" holds the
  // even steps' numbers (weights 8, 8), "odd" the odd ones' (weights 8, 6).
  for (int64_t e = 1; e <= 6; ++e) {
    const double s0 = double(4 * (e - 1));
    const auto& rec = r.sink->records[size_t(e - 1)];
    EXPECT_DOUBLE_EQ(rec.get("train_even"), (8 * s0 + 8 * (s0 + 2)) / 16) << e;
    EXPECT_DOUBLE_EQ(rec.get("train_odd"), (8 * (s0 + 1) + 6 * (s0 + 3)) / 14) << e;
    const double joint = -(8 * s0 + 8 * (s0 + 1) + 8 * (s0 + 2) + 6 * (s0 + 3)) / 30;
    if (e <= 3) {
      EXPECT_TRUE(std::isnan(rec.get("train_joint_only"))) << e;
    } else {
      EXPECT_DOUBLE_EQ(rec.get("train_joint_only"), joint) << e;
    }
  }
}

TEST(Engine, ResumeAfterAKillMidPhaseTwoEqualsAnUninterruptedRun) {
  PAE_DEVICE_UNDER_TEST(device);
  TempDir tmp;
  auto straight = run_toy(tmp.file("straight"), 6, false, -1, -1, 0, device);
  // Killed in epoch 5 (steps 16..19; step 18 is its third batch): epoch 4 is the last checkpoint.
  EXPECT_THROW(run_toy(tmp.file("killed"), 6, false, 18, -1, 0, device), std::runtime_error);
  auto resumed = run_toy(tmp.file("killed"), 6, true, -1, -1, 0, device);
  // The resumed run continued in phase 2 with the step count it had saved.
  ASSERT_FALSE(resumed.toy->phases_seen.empty());
  EXPECT_EQ(resumed.toy->phases_seen.front(), "joint");
  EXPECT_EQ(resumed.toy->phases_seen.size(), 8u);
  EXPECT_EQ(resumed.toy->steps_taken, 24);
  EXPECT_TRUE(pae::testing::same_on(device, resumed.toy->a, straight.toy->a));
  EXPECT_TRUE(pae::testing::same_on(device, resumed.toy->b, straight.toy->b));
  // The metrics file keeps one line per epoch (lines of the killed epoch are not duplicated).
  EXPECT_EQ(pae::testing::metrics_without_timing(tmp.file("killed/metrics.jsonl")),
            pae::testing::metrics_without_timing(tmp.file("straight/metrics.jsonl")));
  // Killed between epoch 5's metrics line and its checkpoint: the line is dropped on resume
  // and written again once, by the re-run epoch.
  EXPECT_THROW(run_toy(tmp.file("late"), 6, false, -1, 5, 0, device), std::runtime_error);
  EXPECT_NE(read_text(tmp.file("late/metrics.jsonl")).find("\"epoch\": 5"), std::string::npos);
  auto late = run_toy(tmp.file("late"), 6, true, -1, -1, 0, device);
  EXPECT_TRUE(pae::testing::same_on(device, late.toy->b, straight.toy->b));
  EXPECT_EQ(pae::testing::metrics_without_timing(tmp.file("late/metrics.jsonl")),
            pae::testing::metrics_without_timing(tmp.file("straight/metrics.jsonl")));
}

TEST(Engine, AStopSignalCheckpointsAtTheNextStepAndResumeContinuesMidEpochExactly) {
  // SIGTERM (deferred as pae-train defers it) inside steps of epochs 1, 3 (phase 1), 5 (phase 2)
  // and the last batch of the last epoch, with Polyak averaging on: each stop writes
  // mid_epoch.pt after the step and throws Stopped (exit 143); the run resumed after each ends
  // as the uninterrupted run (weights, trainable state, metrics.jsonl).
  pae::defer_stop_signals();
  TempDir tmp;
  const double decay = 0.9;
  auto straight = run_toy(tmp.file("straight"), 6, false, -1, -1, decay);
  const auto run = [&](bool resume, int64_t signal_at) {
    torch::manual_seed(11);
    ToyRun r{std::make_shared<Toy>(3), std::make_shared<report::MemorySink>()};
    r.toy->signal_at_step = signal_at;
    train::Engine engine(toy_options(tmp.file("stopped"), 6, resume, decay),
                         {r.sink, std::make_shared<report::JsonLinesSink>(tmp.file("stopped/metrics.jsonl"))});
    engine.fit(*r.toy, toy_data());
    return r;
  };
  const int64_t stops[] = {1, 9, 17, 23};  // batch 2 of epoch 1, 2 of 3, 2 of 5, the last of 6
  int64_t steps_before = 0;
  for (const int64_t step : stops) {
    SCOPED_TRACE(step);
    int code = 0;
    std::string message;
    try {
      run(step > stops[0], step);
    } catch (const pae::Stopped& e) {
      code = e.exit_code();
      message = e.what();
    }
    pae::forget_stop_signal();
    EXPECT_EQ(code, 143) << message;
    EXPECT_NE(message.find("SIGTERM at epoch " + std::to_string(step / 4 + 1) + ", batch " +
                           std::to_string(step % 4 + 1) + " of 4 (step " + std::to_string(step + 1) + ")"),
              std::string::npos)
        << message;
    EXPECT_TRUE(fs::exists(tmp.file("stopped/checkpoints/mid_epoch.pt")));
    torch::manual_seed(5);
    Toy mid(3);
    EXPECT_EQ(train::load_weights(tmp.file("stopped"), "mid_epoch", mid).global_step, step + 1);
    steps_before = step + 1;
  }
  auto resumed = run(true, -1);
  EXPECT_EQ(resumed.toy->steps_taken, 24) << "steps counted across four stops";
  EXPECT_EQ(int64_t(resumed.toy->phases_seen.size()), 24 - steps_before) << "resumed after the last stop's step";
  EXPECT_TRUE(torch::equal(resumed.toy->a, straight.toy->a));
  EXPECT_TRUE(torch::equal(resumed.toy->b, straight.toy->b));
  EXPECT_FALSE(fs::exists(tmp.file("stopped/checkpoints/mid_epoch.pt"))) << "an epoch's end removes it";
  EXPECT_EQ(pae::testing::metrics_without_timing(tmp.file("stopped/metrics.jsonl")),
            pae::testing::metrics_without_timing(tmp.file("straight/metrics.jsonl")));
}

TEST(Engine, CheckpointsEveryNStepsLetAKillResumeMidEpoch) {
  // train.checkpoint_every: 3 (steps): killed at step 18 (batch 3 of epoch 5), the run resumes
  // from the checkpoint after step 18 (not from epoch 4's end) and ends as the uninterrupted run.
  TempDir tmp;
  auto straight = run_toy(tmp.file("straight"), 6, false);
  auto options = toy_options(tmp.file("killed"), 6, false);
  options.checkpoint_every_steps = 3;
  torch::manual_seed(11);
  Toy killed(3);
  killed.crash_at_step = 19;
  EXPECT_THROW(train::Engine(options).fit(killed, toy_data()), std::runtime_error);
  options.resume = true;
  torch::manual_seed(11);
  Toy resumed(3);
  train::Engine(options).fit(resumed, toy_data());
  EXPECT_EQ(resumed.phases_seen.size(), 6u) << "steps 18..23 re-run: the checkpoint after step 18 (the 18th) held";
  EXPECT_TRUE(torch::equal(resumed.a, straight.toy->a));
  EXPECT_TRUE(torch::equal(resumed.b, straight.toy->b));
}

TEST(Engine, PolyakAveragedWeightsAreValidatedAndSavedAndSurviveResume) {
  TempDir tmp;
  const double decay = 0.9;
  // The raw trajectory without averaging (averaging must not change it) and its average by hand.
  struct Recorder : Toy {
    using Toy::Toy;
    void train_step(const nn::Batch& batch, nn::StepContext& ctx) override {
      Toy::train_step(batch, ctx);
      const double t = double(ctx.global_step()), d = std::min(0.9, (1 + t) / (10 + t));
      avg[0] = d * avg[0] + (1 - d) * a.detach();
      avg[1] = d * avg[1] + (1 - d) * b.detach();
    }
    std::vector<torch::Tensor> avg;
  };
  torch::manual_seed(11);
  Recorder rec(3);
  rec.avg = {rec.a.detach().clone(), rec.b.detach().clone()};
  train::Engine(toy_options(tmp.file("plain"), 6, false)).fit(rec, toy_data());

  auto averaged = run_toy(tmp.file("ema"), 6, false, -1, -1, decay);
  EXPECT_TRUE(torch::equal(averaged.toy->a, rec.a)) << "averaging changed the training trajectory";
  torch::manual_seed(5);
  Toy saved(3);
  train::load_weights(tmp.file("ema"), "last", saved);
  EXPECT_TRUE(torch::allclose(saved.a, rec.avg[0], 1e-5, 1e-6)) << saved.a << rec.avg[0];
  EXPECT_TRUE(torch::allclose(saved.b, rec.avg[1], 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(saved.a, rec.a, 1e-3, 1e-4)) << "the checkpoint holds the raw weights";
  // The last epoch's validation loss is the averaged weights' loss.
  const auto& last = averaged.sink->records.back();
  double val = -1;
  for (const auto& [k, v] : last.values)
    if (k == "val_loss") val = v;
  EXPECT_NEAR(val, saved.validate(toy_data().validation, 0).at("loss"), 1e-6);
  // Killed in epoch 5 and resumed: the same raw weights and the same average.
  EXPECT_THROW(run_toy(tmp.file("killed"), 6, false, 18, -1, decay), std::runtime_error);
  auto resumed = run_toy(tmp.file("killed"), 6, true, -1, -1, decay);
  EXPECT_TRUE(torch::equal(resumed.toy->a, averaged.toy->a));
  Toy saved_resumed(3);
  train::load_weights(tmp.file("killed"), "last", saved_resumed);
  EXPECT_TRUE(torch::equal(saved_resumed.a, saved.a));
  EXPECT_TRUE(torch::equal(saved_resumed.b, saved.b));
}

TEST(Engine, PatienceEndsAPhaseAndIsRestoredOnResume) {
  // A trainable whose validation never improves after its first epoch stops after
  // 1 + patience epochs, and a resumed run does not start that phase again.
  TempDir tmp;
  auto o = toy_options(tmp.file("run"), 10, false);
  o.patience = 2;
  torch::manual_seed(11);
  struct Flat : Toy {
    using Toy::Toy;
    std::vector<nn::Phase> phases(int64_t epochs) const override { return {{"only", epochs}}; }
    nn::Terms validate(const nn::Batch&, int64_t) override { return {{"loss", 1.0}}; }
  } flat(0);
  auto sink = std::make_shared<report::MemorySink>();
  train::Engine(o, {sink}).fit(flat, toy_data());
  EXPECT_EQ(sink->records.size(), 3u);
  o.resume = true;
  const auto again = train::Engine(o, {sink}).fit(flat, toy_data());
  EXPECT_EQ(again.state.epoch, 3);
  EXPECT_TRUE(again.state.phase_stopped);
  EXPECT_EQ(again.state.best_epoch, 1);
}

TEST(Engine, PhaseBatchCapAndPhaseEndCheckpoints) {
  // A phase capped at 2 batches per epoch takes 2 steps per epoch; each phase's end state is
  // saved as checkpoints/phase_<name>.pt and loads back to the weights it had then.
  TempDir tmp;
  torch::manual_seed(11);
  struct Capped : Toy {
    using Toy::Toy;
    std::vector<nn::Phase> phases(int64_t epochs) const override {
      return {{"warm", warm_, -1, 2}, {"joint", epochs - warm_}};
    }
    void train_step(const nn::Batch& batch, nn::StepContext& ctx) override {
      if (ctx.phase() == "joint" && !a_after_warm.defined()) a_after_warm = a.detach().clone();
      Toy::train_step(batch, ctx);
    }
    torch::Tensor a_after_warm;
  } capped(3);
  train::Engine(toy_options(tmp.file("run"), 5, false), {}).fit(capped, toy_data());
  EXPECT_EQ(capped.steps_taken, 3 * 2 + 2 * 4);
  ASSERT_TRUE(capped.a_after_warm.defined());
  Capped loaded(3);
  const auto warm = train::load_weights(tmp.file("run"), "phase_warm", loaded);
  EXPECT_EQ(warm.epoch, 3);
  EXPECT_TRUE(torch::equal(loaded.a, capped.a_after_warm));
  EXPECT_FALSE(torch::equal(loaded.a, capped.a));
  train::load_weights(tmp.file("run"), "phase_joint", loaded);
  EXPECT_TRUE(torch::equal(loaded.a, capped.a));
  EXPECT_NE(error_of([&] { train::checkpoint_path(tmp.file("run"), "phase_../x"); }).find("phase_<name>"),
            std::string::npos);
  EXPECT_NE(error_of([&] { train::load_weights(tmp.file("run"), "phase_cool", loaded); }).find("phase_cool.pt"),
            std::string::npos);
}

TEST(Optim, SchedulesFollowTheirClosedForms) {
  train::OptimizerOptions o;
  o.lr = 0.1;
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 7, 10), 0.1);
  o.schedule = "cosine";
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 0, 10), 0.1);
  EXPECT_NEAR(train::scheduled_lr(o, 5, 10), 0.05, 1e-15);
  EXPECT_NEAR(train::scheduled_lr(o, 2, 10), 0.05 * (1 + std::cos(M_PI * 0.2)), 1e-15);
  o.warmup_epochs = 3;  // 0.025, 0.05, 0.075, then cosine over the remaining 7 epochs
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 0, 10), 0.025);
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 2, 10), 0.075);
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 3, 10), 0.1);
  EXPECT_NEAR(train::scheduled_lr(o, 5, 10), 0.05 * (1 + std::cos(M_PI * 2 / 7)), 1e-15);
  o.warmup_epochs = 0;  // restarted every 4 epochs: epochs 4 and 8 start again at the full rate
  o.restart_epochs = 4;
  for (int64_t e : {0, 4, 8}) EXPECT_DOUBLE_EQ(train::scheduled_lr(o, e, 10), 0.1) << e;
  EXPECT_NEAR(train::scheduled_lr(o, 6, 10), 0.05, 1e-15);
  EXPECT_NEAR(train::scheduled_lr(o, 9, 10), 0.05 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  o = {};
  o.lr = 0.1;
  o.schedule = "step";
  o.decay_epoch = 4;
  o.decay = 0.5;
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 3, 10), 0.1);
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 4, 10), 0.05);
  o.schedule = "exponential";
  EXPECT_NE(error_of([&] { train::scheduled_lr(o, 4, 10); }).find("'exponential'"), std::string::npos);
}

TEST(Optim, EveryRegisteredOptimizerTakesItsLearningRate) {
  for (const auto& name : train::optimizer_names()) {
    train::OptimizerOptions o;
    o.name = name;
    o.lr = 0.25;
    auto p = torch::ones({2}, torch::requires_grad());
    auto opt = train::make_optimizer(o, {p});
    EXPECT_DOUBLE_EQ(train::get_lr(*opt), 0.25) << name;
    train::set_lr(*opt, 0.125);
    EXPECT_DOUBLE_EQ(train::get_lr(*opt), 0.125) << name;
    // One step on loss = sum(p): every optimizer moves p down.
    p.sum().backward();
    opt->step();
    EXPECT_TRUE((p.detach() < 1).all().item<bool>()) << name;
  }
  train::OptimizerOptions bad;
  bad.name = "lbfgs2";
  const auto msg = error_of([&] { train::make_optimizer(bad, {torch::ones({1}, torch::requires_grad())}); });
  EXPECT_NE(msg.find("'lbfgs2'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("adamw"), std::string::npos) << msg;
}

TEST(Optim, FusedAdamStepsAsLibTorchsAdamAndSharesItsCheckpoints) {
  // The one-pass CPU step against torch::optim::Adam / AdamW on the same gradients: float64 to
  // rounding, float32 within a few ulps per step; with and without weight decay, over a
  // parameter larger than one thread's block; and the optimizer state, saved by either, loads
  // into the other and continues identically.
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    for (const std::string name : {"adam", "adamw"}) {
      for (double wd : {0.0, 0.1}) {
        torch::manual_seed(3);
        auto init = {torch::randn({70001}, dtype), torch::randn({7, 5}, dtype)};
        std::vector<torch::Tensor> a, b;
        for (const auto& t : init) {
          a.push_back(t.clone().requires_grad_(true));
          b.push_back(t.clone().requires_grad_(true));
        }
        train::OptimizerOptions o;
        o.name = name;
        o.lr = 0.01;
        o.weight_decay = wd;
        auto fused = train::make_optimizer(o, a);
        ASSERT_TRUE(dynamic_cast<train::FusedAdam*>(fused.get()) || dynamic_cast<train::FusedAdamW*>(fused.get()));
        std::unique_ptr<torch::optim::Optimizer> plain;
        if (name == "adam")
          plain = std::make_unique<torch::optim::Adam>(b, torch::optim::AdamOptions(0.01).weight_decay(wd));
        else
          plain = std::make_unique<torch::optim::AdamW>(b, torch::optim::AdamWOptions(0.01).weight_decay(wd));
        auto run = [&](torch::optim::Optimizer& opt, std::vector<torch::Tensor>& params, int steps, int seed) {
          for (int s = 0; s < steps; ++s) {
            opt.zero_grad();
            torch::manual_seed(uint64_t(seed * 100 + s));
            auto loss = torch::zeros({}, dtype);
            for (auto& p : params) loss = loss + (p.pow(3) * torch::randn_like(p)).sum();
            loss.backward();
            opt.step();
          }
        };
        run(*fused, a, 20, 1);
        run(*plain, b, 20, 1);
        const double tol = dtype == torch::kFloat64 ? 1e-12 : 1e-5;
        for (size_t i = 0; i < a.size(); ++i)
          EXPECT_TRUE(torch::allclose(a[i], b[i], tol, tol))
              << name << " wd " << wd << " param " << i << " max diff " << (a[i] - b[i]).abs().max().item<double>();
        // State saved by the fused optimizer continues in LibTorch's, and vice versa.
        std::stringstream fused_state, plain_state;
        {
          torch::serialize::OutputArchive out;
          fused->save(out);
          out.save_to(fused_state);
          torch::serialize::OutputArchive out2;
          plain->save(out2);
          out2.save_to(plain_state);
        }
        torch::serialize::InputArchive in, in2;
        in.load_from(fused_state);
        plain->load(in);
        in2.load_from(plain_state);
        fused->load(in2);
        {
          torch::NoGradGuard g;
          for (size_t i = 0; i < a.size(); ++i) a[i].copy_(b[i]);
        }
        run(*fused, a, 5, 2);
        run(*plain, b, 5, 2);
        for (size_t i = 0; i < a.size(); ++i)
          EXPECT_TRUE(torch::allclose(a[i], b[i], tol, tol)) << name << " after swapping state, param " << i;
      }
    }
  }
  at::set_num_threads(before);
}

TEST(Optim, GradientCheckFindsANonFiniteEntryAnywhere) {
  auto p = torch::zeros({100003}, torch::requires_grad());
  auto q = torch::zeros({3}, torch::kFloat64).requires_grad_(true);
  p.mutable_grad() = torch::zeros_like(p);
  q.mutable_grad() = torch::zeros_like(q);
  EXPECT_TRUE(train::gradients_finite({p, q}));
  for (int64_t at : {int64_t(0), int64_t(65536), int64_t(100002)}) {
    for (double bad :
         {std::nan(""), std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
      torch::NoGradGuard g;
      p.mutable_grad().zero_();
      p.mutable_grad()[at] = bad;
      EXPECT_FALSE(train::gradients_finite({q, p})) << "entry " << at << " = " << bad;
    }
  }
  p.mutable_grad().zero_();
  q.mutable_grad()[1] = std::nan("");
  EXPECT_FALSE(train::gradients_finite({p, q}));
}

TEST(Dense, HessianVectorProductWithTwoThreadsMatchesTorchLinear) {
  // The threaded Dense path (CPU, >1 thread, batch >= 32) must stay right when its gradient is
  // differentiated again: compare H v through Dense layers with H v through torch::linear.
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  ASSERT_EQ(at::get_num_threads(), 2);
  torch::manual_seed(4);
  nn::Dense l1(6, 16), l2(16, 16), l3(16, 1);
  auto x = torch::randn({48, 6}, torch::kFloat64);
  for (auto* l : {&l1, &l2, &l3}) (*l)->to(torch::kFloat64);
  std::vector<torch::Tensor> params;
  for (auto* l : {&l1, &l2, &l3}) params.insert(params.end(), {(*l)->weight, (*l)->bias});
  auto mlp = [&](bool threaded) {
    auto layer = [&](nn::Dense& l, const torch::Tensor& h) {
      return threaded ? l->forward(h) : torch::linear(h, l->weight, l->bias);
    };
    auto layer_relu = [&](nn::Dense& l, const torch::Tensor& h) {  // the fused ReLU
      return threaded ? l->forward_relu(h) : torch::relu(torch::linear(h, l->weight, l->bias));
    };
    return layer(l3, torch::tanh(layer_relu(l2, torch::tanh(layer(l1, x))))).pow(2).mean();
  };
  std::vector<torch::Tensor> v;
  for (const auto& p : params) v.push_back(torch::randn_like(p));
  auto hvp = [&](bool threaded) {
    auto grads = torch::autograd::grad({mlp(threaded)}, params, {}, /*retain_graph=*/true, /*create_graph=*/true);
    auto gv = torch::zeros({}, torch::kFloat64);
    for (size_t i = 0; i < grads.size(); ++i) gv = gv + (grads[i] * v[i]).sum();
    return std::make_pair(grads, torch::autograd::grad({gv}, params));
  };
  const auto [g_dense, h_dense] = hvp(true);
  const auto [g_linear, h_linear] = hvp(false);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::allclose(g_dense[i], g_linear[i], 1e-10, 1e-12)) << "gradient " << i;
    EXPECT_TRUE(torch::allclose(h_dense[i], h_linear[i], 1e-10, 1e-12)) << "Hessian-vector product " << i;
  }
  // And the plain first-order threaded path (no graph) gives the same gradient.
  auto first = torch::autograd::grad({mlp(true)}, params);
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::allclose(first[i], g_linear[i], 1e-10, 1e-12)) << i;
  at::set_num_threads(before);
}

TEST(Dense, Float32BlocksMatchTorchLinearWithAndWithoutReLU) {
  // The blocked single-precision path (oneDNN's sgemm or the BLAS called on raw pointers from
  // each thread; on one thread too where oneDNN's is in the process) against torch::linear:
  // values and every gradient, odd sizes so the blocks are uneven.
  const int before = at::get_num_threads();
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    torch::manual_seed(8);
    nn::Dense l(37, 53);
    auto x = torch::randn({101, 37}).requires_grad_(true);
    for (bool relu : {false, true}) {
      auto y = relu ? l->forward_relu(x) : l->forward(x);
      auto yr = torch::linear(x, l->weight, l->bias);
      if (relu) yr = torch::relu(yr);
      EXPECT_TRUE(torch::allclose(y, yr, 1e-5, 1e-5)) << "relu " << relu << ", threads " << threads;
      auto gy = torch::randn_like(y);
      auto g = torch::autograd::grad({(y * gy).sum()}, {x, l->weight, l->bias});
      auto gr = torch::autograd::grad({(yr * gy).sum()}, {x, l->weight, l->bias});
      for (size_t i = 0; i < g.size(); ++i)
        EXPECT_TRUE(torch::allclose(g[i], gr[i], 1e-4, 1e-4))
            << "relu " << relu << " gradient " << i << ", threads " << threads;
    }
  }
  at::set_num_threads(before);
}

TEST(Blas, FloatProductsMatchDoubleInEveryLayoutAndStaySingleThreaded) {
  // pae::nn::blas::gemm (row-major, oneDNN's sgemm where the process has it, else the BLAS):
  // every transpose combination, with and without accumulating into C, leading dimensions wider
  // than the matrices, against the product in double. Called outside a parallel region with two
  // intra-op threads, it must leave the thread setting as it found it (oneDNN would thread the
  // call itself; the wrapper narrows it to one thread and restores it).
  if (!nn::blas::has_sgemm())
    GTEST_SKIP() << "this LibTorch exposes neither dnnl_sgemm nor sgemm_ (a wheel's private BLAS): pae's layers take "
                    "LibTorch's products";
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  const char* choice = std::getenv("PAE_SGEMM");
  if (dlsym(RTLD_DEFAULT, "dnnl_sgemm") != nullptr && !(choice != nullptr && std::string(choice) == "blas"))
    EXPECT_STREQ(nn::blas::sgemm_library(), "onednn");  // found, and used
  torch::manual_seed(11);
  const int64_t m = 37, n = 53, k = 19, pad = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool accumulate : {false, true}) {
        // Stored A is [m,k] (or [k,m] when transposed), row-major with `pad` unused columns.
        auto a = torch::randn({ta ? k : m, (ta ? m : k) + pad});
        auto b = torch::randn({tb ? n : k, (tb ? k : n) + pad});
        auto c = torch::randn({m, n + pad});
        const auto a_used = a.narrow(1, 0, ta ? m : k), b_used = b.narrow(1, 0, tb ? k : n);
        auto expected =
            (ta ? a_used.t() : a_used).to(torch::kFloat64).mm((tb ? b_used.t() : b_used).to(torch::kFloat64));
        if (accumulate) expected += c.narrow(1, 0, n).to(torch::kFloat64);
        const auto untouched = c.narrow(1, n, pad).clone();
        nn::blas::gemm(ta, tb, m, n, k, a.data_ptr<float>(), a.size(1), b.data_ptr<float>(), b.size(1),
                       c.data_ptr<float>(), c.size(1), accumulate);
        const auto what = std::string("trans_a ") + (ta ? "1" : "0") + " trans_b " + (tb ? "1" : "0") + " accumulate " +
                          (accumulate ? "1" : "0");
        EXPECT_TRUE(torch::allclose(c.narrow(1, 0, n).to(torch::kFloat64), expected, 1e-5, 1e-5)) << what;
        EXPECT_TRUE(torch::equal(c.narrow(1, n, pad), untouched)) << what << ": wrote past n";
        EXPECT_EQ(at::get_num_threads(), 2) << what;
      }
  // Without accumulating, C's old contents are never read (the layers write into torch::empty
  // buffers), while a NaN in an operand reaches the product (the non-finite checks rely on it).
  {
    auto x = torch::randn({6, 7}), y = torch::randn({7, 5});
    auto out = torch::full({6, 5}, std::nanf(""));
    nn::blas::gemm(false, false, 6, 5, 7, x.data_ptr<float>(), 7, y.data_ptr<float>(), 5, out.data_ptr<float>(), 5);
    EXPECT_TRUE(torch::allclose(out, x.mm(y), 1e-5, 1e-5)) << "NaN in C before the product";
    x[2][3] = std::nanf("");
    nn::blas::gemm(false, false, 6, 5, 7, x.data_ptr<float>(), 7, y.data_ptr<float>(), 5, out.data_ptr<float>(), 5);
    EXPECT_TRUE(torch::isnan(out[2]).all().item<bool>()) << "a NaN in A must reach its row";
    EXPECT_FALSE(torch::isnan(out[1]).any().item<bool>());
  }
  // Empty sums, as a gradient over zero rows asks for: C = 0, or C unchanged when accumulating;
  // and no rows at all: nothing happens.
  auto a = torch::randn({4, 4}), b = torch::randn({4, 4}), c = torch::randn({3, 5});
  const auto c0 = c.clone();
  nn::blas::gemm(true, false, 3, 5, 0, a.data_ptr<float>(), 4, b.data_ptr<float>(), 5, c.data_ptr<float>(), 5, true);
  EXPECT_TRUE(torch::equal(c, c0)) << "k = 0, accumulating";
  nn::blas::gemm(true, false, 3, 5, 0, a.data_ptr<float>(), 4, b.data_ptr<float>(), 5, c.data_ptr<float>(), 5);
  EXPECT_TRUE(torch::equal(c, torch::zeros_like(c))) << "k = 0";
  nn::blas::gemm(false, false, 0, 5, 4, a.data_ptr<float>(), 4, b.data_ptr<float>(), 5, c.data_ptr<float>(), 5);
  EXPECT_TRUE(torch::equal(c, torch::zeros_like(c))) << "m = 0 wrote";
  at::set_num_threads(before);
}

TEST(ConvTranspose2d, MatchesLibTorchsInValueGradientAndHessianVectorProduct) {
  // The adjoint-convolution path must equal torch's transposed convolution: values, first-order
  // gradients, and gradients differentiated again (the Gauss-Newton posterior differentiates a
  // decoder's backward). Odd and even kernels, output padding 0 and 1, with and without bias.
  const int before = at::get_num_threads();
  at::set_num_threads(2);
  namespace F = torch::nn::functional;
  struct Case {
    int64_t in, out, kernel, padding, output_padding, size;
    bool bias;
  };
  for (const auto& c : {Case{5, 3, 3, 1, 0, 4, false}, Case{4, 2, 3, 1, 1, 7, true}, Case{3, 1, 4, 1, 0, 5, true}}) {
    torch::manual_seed(7);
    pae::nn::ConvTranspose2d layer(torch::nn::ConvTranspose2dOptions(c.in, c.out, c.kernel)
                                       .stride(2)
                                       .padding(c.padding)
                                       .output_padding(c.output_padding)
                                       .bias(c.bias));
    layer->to(torch::kFloat64);
    auto x = torch::randn({6, c.in, c.size, c.size}, torch::kFloat64).requires_grad_(true);
    std::vector<torch::Tensor> inputs = {x, layer->weight};
    if (c.bias) inputs.push_back(layer->bias);
    auto reference = [&](const torch::Tensor& h) {
      return F::conv_transpose2d(h, layer->weight,
                                 F::ConvTranspose2dFuncOptions()
                                     .bias(c.bias ? layer->bias : torch::Tensor())
                                     .stride(2)
                                     .padding(c.padding)
                                     .output_padding(c.output_padding));
    };
    const auto y = layer->forward(x), y_ref = reference(x);
    ASSERT_EQ(y.sizes(), y_ref.sizes());
    EXPECT_TRUE(torch::allclose(y, y_ref, 1e-10, 1e-12)) << "value, kernel " << c.kernel;
    auto target = torch::randn_like(y);
    std::vector<torch::Tensor> v;
    for (const auto& p : inputs) v.push_back(torch::randn_like(p));
    auto hvp = [&](const torch::Tensor& out) {
      auto loss = (torch::tanh(out) * target).sum();
      auto grads = torch::autograd::grad({loss}, inputs, {}, /*retain_graph=*/true, /*create_graph=*/true);
      auto gv = torch::zeros({}, torch::kFloat64);
      for (size_t i = 0; i < grads.size(); ++i) gv = gv + (grads[i] * v[i]).sum();
      return std::make_pair(grads, torch::autograd::grad({gv}, inputs));
    };
    const auto [g, h] = hvp(layer->forward(x));
    const auto [g_ref, h_ref] = hvp(reference(x));
    for (size_t i = 0; i < inputs.size(); ++i) {
      EXPECT_TRUE(torch::allclose(g[i], g_ref[i], 1e-10, 1e-12)) << "gradient " << i << ", kernel " << c.kernel;
      EXPECT_TRUE(torch::allclose(h[i], h_ref[i], 1e-10, 1e-12)) << "Hessian-vector product " << i;
    }
    // float32 (the oneDNN kernels): the same up to rounding.
    const auto gx_ref = torch::autograd::grad({(reference(x) * target).sum()}, {x, layer->weight});
    const auto y_ref_copy = y_ref.detach().clone();
    layer->to(torch::kFloat32);
    auto xf = x.detach().to(torch::kFloat32).requires_grad_(true);
    auto yf = layer->forward(xf);
    EXPECT_TRUE(torch::allclose(yf.to(torch::kFloat64), y_ref_copy, 1e-4, 1e-5)) << "float32 value";
    auto gf = torch::autograd::grad({(yf * target.to(torch::kFloat32)).sum()}, {xf, layer->weight});
    EXPECT_TRUE(torch::allclose(gf[0].to(torch::kFloat64), gx_ref[0], 1e-4, 1e-4)) << "float32 grad-input";
    EXPECT_TRUE(torch::allclose(gf[1].to(torch::kFloat64), gx_ref[1], 1e-4, 1e-4)) << "float32 grad-weight";
  }
  at::set_num_threads(before);
}

TEST(Engine, ATightAddressSpaceLimitIsRefusedBeforeTrainingAndAFailedAllocationIsOneError) {
  const size_t used = mapped_bytes();
  ASSERT_GT(used, 0u);
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &before), 0);
  auto limit_to = [&](size_t bytes) {
    rlimit r = before;
    r.rlim_cur = bytes;
    ASSERT_EQ(::setrlimit(RLIMIT_AS, &r), 0);
  };
  EXPECT_NO_THROW(check_memory_headroom());  // no limit: nothing to check
  limit_to(mapped_bytes() + (kTrainingHeadroom >> 1));
  const auto msg = error_of([] { check_memory_headroom(); });
  limit_to(mapped_bytes() + (kTrainingHeadroom >> 1));
  // LibTorch's failed allocation: one line and exit 2, not "internal error" and 1.
  const int status = run_guarded([] {
    auto t = torch::empty({int64_t(1) << 28});  // 1 GiB
    return int(t.numel() == 0);
  });
  ::setrlimit(RLIMIT_AS, &before);
  EXPECT_NE(msg.find("the address-space limit (ulimit -v "), std::string::npos) << msg;
  EXPECT_NE(msg.find("training needs about 192 MiB more"), std::string::npos) << msg;
  EXPECT_EQ(status, kUserErrorExit);
  EXPECT_NE(out_of_memory_message("x").find("raise the limit"), std::string::npos);
  limit_to(mapped_bytes() + 2 * kTrainingHeadroom);  // room enough
  EXPECT_NO_THROW(check_memory_headroom());
  ::setrlimit(RLIMIT_AS, &before);
}
