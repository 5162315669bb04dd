// The adversarial auto-encoder: its discriminator step, and prior matching on a toy problem.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <numeric>

#include "pae/config.h"
#include "pae/eval/pae.h"
#include "pae/models/aae.h"
#include "pae/report/sinks.h"
#include "pae/train/engine.h"
#include "test_util.h"

using namespace pae;

namespace {

ModelOptions toy_options(const std::string& type) {
  ModelOptions o;
  o.type = type;
  o.arch = "mlp";
  o.hidden = {32};
  o.latent_dim = 2;
  o.recon_loss = "mse";
  if (type == "aae") o.family<models::AaeOptions>().disc_hidden = {32, 32};
  return o;
}

constexpr double kPriorStd = 3.0;

/// Squared maximum mean discrepancy (RBF kernel of the prior's width, biased estimate) between
/// codes z:[N,D] and a fixed sample of the prior N(0, 3^2 I) of the same size: 0 for equal
/// distributions.
double mmd_to_prior(const at::Tensor& z) {
  auto gen = at::detail::createCPUGenerator(77);
  const auto p = at::normal(0.0, kPriorStd, {z.size(0), z.size(1)}, gen);
  auto k = [](const at::Tensor& a, const at::Tensor& b) {
    return torch::exp(-0.5 * torch::cdist(a, b).pow(2) / (kPriorStd * kPriorStd)).mean();
  };
  return (k(z, z) + k(p, p) - 2 * k(z, p)).item<double>();
}

}  // namespace

TEST(Aae, DiscriminatorStepRaisesItsAccuracyAndLeavesTheEncoderUntouched) {
  PAE_DEVICE_UNDER_TEST(device);
  torch::manual_seed(0);
  auto aae = std::make_shared<models::AdversarialAE>(toy_options("aae"), models::ImageShape{1, 1, 6});
  aae->to(device);
  const auto x = torch::rand({64, 1, 1, 6}).to(device);
  const auto real = aae->sample_latents(64);  // a fixed evaluation batch
  auto accuracy = [&] {
    torch::NoGradGuard g;
    aae->eval();
    const auto fake = aae->encode(x);
    return 0.5 * ((aae->discriminate(real) > 0).to(torch::kFloat).mean() +
                  (aae->discriminate(fake) < 0).to(torch::kFloat).mean())
                     .item<double>();
  };
  const auto groups = aae->parameter_groups();
  ASSERT_EQ(groups[2].first, "gen");
  std::vector<at::Tensor> encoder_before;
  for (const auto& p : groups[2].second) encoder_before.push_back(p.detach().clone());
  const double before = accuracy();
  pae::testing::OneGroupContext ctx("disc", groups[1].second, 1e-2);
  for (int i = 0; i < 30; ++i) {
    aae->train();
    aae->train_step({x, {}}, ctx);
  }
  const double after = accuracy();
  EXPECT_EQ(ctx.steps, 30);
  EXPECT_GT(after, before + 0.2) << before << " -> " << after;
  const auto& encoder_after = groups[2].second;
  for (size_t i = 0; i < encoder_before.size(); ++i) {
    EXPECT_TRUE(torch::equal(encoder_after[i], encoder_before[i])) << "encoder parameter " << i;
    // The discriminator's loss must not reach the encoder (its codes are detached there).
    EXPECT_TRUE(!encoder_after[i].grad().defined() || encoder_after[i].grad().abs().sum().item<double>() == 0)
        << "encoder parameter " << i << " has a gradient from the discriminator step";
  }
}

TEST(Aae, TrainingMovesTheAggregatePosteriorTowardThePrior) {
  // 2-D codes of 6-pixel "images" made from 2 uniform numbers: the plain AE puts its codes
  // anywhere; the AAE, trained the same way, must bring their distribution close to its prior N(0, 3^2 I).
  torch::manual_seed(1);
  const auto t = torch::rand({512, 2});
  const auto a = t.slice(1, 0, 1), b = t.slice(1, 1, 2);
  const auto x = torch::cat({a, b, a * b, (a * 3).sin().abs(), b.pow(2), 1 - a}, 1).view({512, 1, 1, 6});
  // The MMD to N(0, I) after each epoch (a GAN oscillates: the mean of the last 10 epochs is
  // what training reached).
  struct MomentSink : report::MetricsSink {
    std::function<double()> measure;
    std::vector<double> distances;
    void on_epoch(const report::EpochRecord&) override { distances.push_back(measure()); }
  };
  auto train = [&](const std::string& type) {
    torch::manual_seed(2);
    auto options = toy_options(type);
    if (type == "aae") options.family<models::AaeOptions>().prior_std = kPriorStd;
    auto model = models::build_autoencoder(options, {1, 1, 6});
    auto codes_distance = [&] {
      torch::NoGradGuard g;
      model->eval();
      const double d = mmd_to_prior(model->encode(x));
      model->train();
      return d;
    };
    const double start = codes_distance();
    train::EngineOptions eo;
    eo.epochs = 60;
    eo.batch_size = 64;
    eo.quiet = true;
    eo.optimizers[""] = train::OptimizerOptions{};
    if (type == "aae") {  // the usual GAN settings for the adversarial pair: beta1 0.5
      for (const char* g : {"disc", "gen"}) {
        eo.optimizers[g] = train::OptimizerOptions{};
        eo.optimizers[g].lr = 5e-4;
        eo.optimizers[g].beta1 = 0.5;
      }
    }
    train::TrainData data;
    data.size = 512;
    data.batch = [&](const at::Tensor& idx) { return nn::Batch{x.index_select(0, idx), {}}; };
    auto sink = std::make_shared<report::MemorySink>();
    auto moments = std::make_shared<MomentSink>();
    moments->measure = codes_distance;
    train::Engine(eo, {sink, moments}).fit(*model, data);
    if (type == "aae") {
      // All three losses and the discriminator's accuracy reach the metrics.
      for (const char* k : {"train_recon", "train_disc_loss", "train_gen_loss", "train_disc_accuracy"})
        EXPECT_TRUE(std::isfinite(sink->records.back().get(k))) << k;
    }
    const auto& d = moments->distances;
    const double end = std::accumulate(d.end() - 10, d.end(), 0.0) / 10;
    return std::make_pair(start, end);
  };
  const auto [ae_start, ae_end] = train("ae");
  const auto [aae_start, aae_end] = train("aae");
  std::printf("MMD^2 of the codes to N(0, 9 I): plain AE %.4f -> %.4f, AAE %.4f -> %.4f\n", ae_start, ae_end, aae_start,
              aae_end);
  EXPECT_LT(aae_end, 0.25 * aae_start) << aae_start << " -> " << aae_end;
  EXPECT_LT(aae_end, 0.5 * ae_end) << "plain AE " << ae_end << " vs AAE " << aae_end;
}

TEST(Aae, MixturePriorAndConditionalDiscriminator) {
  auto o = toy_options("aae");
  o.family<models::AaeOptions>().prior = "mixture";
  o.family<models::AaeOptions>().prior_components = 4;
  o.family<models::AaeOptions>().prior_radius = 3;
  o.family<models::AaeOptions>().prior_std = 0.1;
  o.family<models::AaeOptions>().conditional = true;
  models::AdversarialAE aae(o, {1, 1, 6});
  // Circle layout: centres at radius 3 in dims 0 and 1, a quarter turn apart.
  EXPECT_TRUE(torch::allclose(aae.centres().norm(2, 1), torch::full({4}, 3.0)));
  EXPECT_NEAR(aae.centres()[1][1].item<double>(), 3.0, 1e-6);
  torch::manual_seed(3);
  const auto z = aae.sample_latents_of(torch::full({2000}, 2, torch::kInt64));
  EXPECT_TRUE(torch::allclose(z.mean(0), aae.centres()[2], 0, 0.01));
  EXPECT_NEAR(z.std(0).mean().item<double>(), 0.1, 0.01);
  // Labels outside the components are a clear error, and a conditional AAE needs labels.
  const auto msg = pae::testing::error_of([&] { aae.discriminate(z.slice(0, 0, 2), torch::tensor({0, 7})); });
  EXPECT_NE(msg.find("prior_components"), std::string::npos) << msg;
  EXPECT_NE(pae::testing::error_of([&] { aae.discriminate(z.slice(0, 0, 2)); }).find("labels"), std::string::npos);
  o.family<models::AaeOptions>().conditional = true;
  o.family<models::AaeOptions>().prior = "gaussian";
  EXPECT_NE(pae::testing::error_of([&] {
              models::AdversarialAE bad(o, {1, 1, 6});
            }).find("mixture"),
            std::string::npos);
}

TEST(Aae, PaeBundleSamplesTheAaesPriorWithoutAFlow) {
  // Without a flow, samples come from the family's prior: for this AAE, N(0, 5^2 I).
  auto o = toy_options("aae");
  o.family<models::AaeOptions>().prior_std = 5;
  auto aae = std::make_shared<models::AdversarialAE>(o, models::ImageShape{1, 1, 6});
  eval::Pae pae(aae, nullptr, Config{});
  torch::manual_seed(4);
  const auto z = pae.sample_latents(20000);
  EXPECT_NEAR(z.std(0).mean().item<double>(), 5.0, 0.1);
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 0.1);
}
