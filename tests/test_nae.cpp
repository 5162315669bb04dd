// The normalized auto-encoder: sphere latents, the phase-2 step, and exact resume in phase 2.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "pae/models/nae.h"
#include "pae/report/sinks.h"
#include "pae/train/engine.h"
#include "test_util.h"

using namespace pae;

namespace {

ModelOptions nae_options() {
  ModelOptions o;
  o.type = "nae";
  o.arch = "mlp";
  o.hidden = {32};
  o.latent_dim = 4;
  o.family<models::NaeOptions>().buffer_size = 16;
  o.family<models::NaeOptions>().z_steps = 3;
  o.family<models::NaeOptions>().x_steps = 4;
  o.family<models::NaeOptions>().x_step_size = 1;
  return o;
}

}  // namespace

TEST(Nae, LatentsAndChainEndsStayOnTheSphere) {
  PAE_DEVICE_UNDER_TEST(device);
  torch::manual_seed(0);
  models::NormalizedAE nae(nae_options(), {1, 4, 4});
  nae.to(device);
  const auto x = torch::rand({20, 1, 4, 4}).to(device);
  const auto ones = [&](int64_t n) { return torch::ones({n}, x.options()); };
  EXPECT_TRUE(torch::allclose(nae.encode(x).norm(2, 1), ones(20), 0, 1e-5));
  EXPECT_TRUE(torch::allclose(nae.sample_latents(50).norm(2, 1), ones(50), 0, 1e-5));
  inference::LangevinStats zs, xs;
  const auto neg = nae.sample_negatives(12, &zs, &xs);
  EXPECT_EQ(neg.sizes(), x.slice(0, 0, 12).sizes());
  EXPECT_GE(neg.min().item<float>(), 0.0f);
  EXPECT_LE(neg.max().item<float>(), 1.0f);
  ASSERT_EQ(nae.buffer_count(), 12);
  EXPECT_TRUE(torch::allclose(nae.buffer().slice(0, 0, 12).norm(2, 1).cpu(), torch::ones({12}), 0, 1e-5));
  EXPECT_LE(zs.energy_end, zs.energy_start + 1e-3);  // the latent chain moves downhill (noise 0.05)
  // The energy is the per-pixel reconstruction error through the sphere code.
  const auto e = nae.energy(x);
  EXPECT_TRUE(torch::allclose(e, (nae.decode(nae.encode(x)) - x).pow(2).flatten(1).mean(1)));
  EXPECT_TRUE(torch::allclose(nae.scores(x).at("energy"), e, 1e-5, 1e-7));
}

TEST(Nae, NegativesDoNotDependOnTheThreadCount) {
  // Three chain groups on one thread, then on two threads (groups 0 and 2 on one, 1 on the
  // other): the same negatives, buffer and statistics, bit for bit.
  auto o = nae_options();
  o.family<models::NaeOptions>().chain_groups = 3;
  auto draw = [&](int threads) {
    const int saved = at::get_num_threads();
    at::set_num_threads(threads);
    torch::manual_seed(4);
    models::NormalizedAE nae(o, {1, 4, 4});
    nae.sample_negatives(10);  // fills part of the buffer: the second draw replays from it
    inference::LangevinStats zs, xs;
    const auto neg = nae.sample_negatives(11, &zs, &xs);
    at::set_num_threads(saved);
    EXPECT_EQ(at::get_num_threads(), saved);
    return std::make_tuple(neg, nae.buffer().clone(), zs.energy_end, xs.clipped);
  };
  const auto [n1, b1, z1, c1] = draw(1);
  const auto [n2, b2, z2, c2] = draw(2);
  EXPECT_TRUE(torch::equal(n1, n2));
  EXPECT_TRUE(torch::equal(b1, b2));
  EXPECT_EQ(z1, z2);
  EXPECT_EQ(c1, c2);
  // Groups have their own streams: one group gives other chains than three.
  o.family<models::NaeOptions>().chain_groups = 1;
  const auto [n3, b3, z3, c3] = draw(2);
  EXPECT_FALSE(torch::equal(n1, n3));
}

TEST(Nae, PhaseTwoStepLowersPositiveEnergyRelativeToNegative) {
  torch::manual_seed(1);
  models::NormalizedAE nae(nae_options(), {1, 4, 4});
  const auto x = torch::rand({32, 1, 4, 4}) * 0.3;  // positives: dark images
  std::vector<at::Tensor> before;
  for (const auto& p : nae.parameters()) before.push_back(p.detach().clone());
  pae::testing::OneGroupContext ctx("nae", nae.parameters(), 1e-3, "nae");
  nae.train();
  nae.train_step({x, {}}, ctx);
  const auto neg = nae.last_negatives();
  ASSERT_TRUE(neg.defined());
  ASSERT_EQ(ctx.steps, 1);
  auto gap = [&] {
    torch::NoGradGuard g;
    return (nae.energy(x).mean() - nae.energy(neg).mean()).item<double>();
  };
  const double after = gap();
  std::vector<at::Tensor> now;
  {
    torch::NoGradGuard g;
    auto params = nae.parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      now.push_back(params[i].detach().clone());
      params[i].copy_(before[i]);
    }
  }
  const double start = gap();
  EXPECT_LT(after, start) << "E(x+) - E(x-) on the step's own batch: " << start << " -> " << after;
  {
    torch::NoGradGuard g;
    auto params = nae.parameters();
    for (size_t i = 0; i < params.size(); ++i) EXPECT_FALSE(torch::equal(now[i], before[i])) << "parameter " << i;
  }
}

TEST(Nae, ResumeInThePhaseTwoMiddleEqualsAnUninterruptedRun) {
  PAE_DEVICE_UNDER_TEST(device);
  pae::testing::TempDir tmp;
  torch::manual_seed(2);
  const auto data_x = torch::rand({24, 1, 4, 4}).to(device);
  train::TrainData data;
  data.size = 24;
  data.batch = [&](const at::Tensor& idx) { return nn::Batch{data_x.index_select(0, idx.to(device)), {}}; };
  data.validation = {data_x.slice(0, 0, 8), {}};
  auto run = [&](const std::string& dir, bool resume, int64_t kill_at) {
    auto o = nae_options();
    o.family<models::NaeOptions>().nae_epochs = 3;
    torch::manual_seed(3);
    auto nae = std::make_shared<models::NormalizedAE>(o, models::ImageShape{1, 4, 4});
    nae->to(device);
    train::EngineOptions eo;
    eo.device = device;
    eo.run_dir = dir;
    eo.epochs = 2;
    eo.batch_size = 8;
    eo.quiet = true;
    eo.resume = resume;
    eo.optimizers[""] = train::OptimizerOptions{};
    auto phases = std::make_shared<report::MemorySink>();
    train::Engine(eo, {phases, std::make_shared<pae::testing::KillAfterMetrics>(kill_at)}).fit(*nae, data);
    return std::make_pair(nae, phases);
  };
  const auto [straight, records] = run(tmp.file("straight"), false, -1);
  ASSERT_EQ(records->records.size(), 5u);
  EXPECT_EQ(records->records[1].phase, "ae");
  EXPECT_EQ(records->records[2].phase, "nae");
  EXPECT_TRUE(std::isfinite(records->records[4].get("train_neg_energy")));
  EXPECT_EQ(straight->buffer_count(), 16);
  // Killed after the metrics of epoch 4 (phase 2's second epoch), before its checkpoint.
  EXPECT_THROW(run(tmp.file("resumed"), false, 4), std::runtime_error);
  const auto [resumed, resumed_records] = run(tmp.file("resumed"), true, -1);
  ASSERT_EQ(resumed_records->records.size(), 2u);  // epochs 4 and 5
  EXPECT_EQ(resumed_records->records[0].phase, "nae");
  EXPECT_TRUE(pae::testing::same_on(device, resumed->buffer(), straight->buffer()));
  EXPECT_EQ(resumed->buffer_count(), straight->buffer_count());
  const auto a = straight->parameters(), b = resumed->parameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(pae::testing::same_on(device, a[i], b[i])) << "parameter " << i;
  // phase_ae.pt holds the network as phase 1 left it (epoch 2): other weights than the end's.
  auto o = nae_options();
  o.family<models::NaeOptions>().nae_epochs = 3;
  models::NormalizedAE before(o, models::ImageShape{1, 4, 4});
  EXPECT_EQ(train::load_weights(tmp.file("straight"), "phase_ae", before).epoch, 2);
  EXPECT_FALSE(torch::equal(before.parameters()[0], a[0].cpu()));
}
