#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "pae/models/autoencoder.h"
#include "pae/models/nae.h"
#include "pae/train/engine.h"
#include "pae/util/error.h"
#include "test_util.h"

using namespace pae;
using namespace pae::models;

namespace {
ModelOptions small(const std::string& type, const std::string& arch) {
  ModelOptions o;
  o.type = type;
  o.arch = arch;
  o.latent_dim = 4;
  o.hidden = {32};
  o.channels = {8, 16};
  o.recon_loss = type == "vae" ? "bernoulli" : "mse";
  if (type == "nae")
    o.family<NaeOptions>().nae_epochs = 0;  // the NAE's phase 1 is the training step these tests look at
  return o;
}
}  // namespace

TEST(Models, OneTrainingStepLowersTheLossOnAFixedBatch) {
  PAE_DEVICE_UNDER_TEST(device);
  for (const auto& type : AutoEncoderRegistry::instance().names()) {
    for (const char* arch : {"mlp", "conv"}) {
      SCOPED_TRACE(type + "/" + arch);
      torch::manual_seed(0);
      auto model = build_autoencoder(small(type, arch), {1, 12, 12});
      model->to(device);
      auto x = torch::rand({16, 1, 12, 12}).to(device);
      model->train();
      torch::manual_seed(1);
      const double before = model->loss(x).loss.item<double>();
      torch::manual_seed(1);
      pae::testing::engine_steps(*model, x, 1);
      model->train();
      torch::manual_seed(1);
      const double after = model->loss(x).loss.item<double>();
      EXPECT_LT(after, before);
    }
  }
}

TEST(Models, DecoderMirrorsEncoderForOddSizesAndKernels) {
  for (int64_t size : {12, 28, 32, 37}) {
    for (int64_t kernel : {3, 4, 5}) {
      auto o = small("ae", "conv");
      o.channels = {4, 8, 8};
      o.kernel = kernel;
      auto model = build_autoencoder(o, {3, size, size + 1});
      auto x = torch::rand({2, 3, size, size + 1});
      EXPECT_EQ(model->reconstruct(x).sizes(), x.sizes()) << size << " k" << kernel;
    }
  }
}

TEST(Models, VaeElboMatchesClosedFormAtZeroWeights) {
  // With every weight zero, mu = logvar = 0 (KL = 0) and the decoder outputs logits 0, so the
  // Bernoulli NLL is D log 2 for any image and any posterior sample.
  auto o = small("vae", "mlp");
  auto model = build_autoencoder(o, {1, 6, 6});
  torch::NoGradGuard g;
  for (auto& p : model->parameters()) p.zero_();
  auto terms = model->loss(torch::rand({5, 1, 6, 6})).terms;
  std::map<std::string, double> m;
  for (auto& kv : terms) m[kv.first] = kv.second.item<double>();
  EXPECT_NEAR(m["kl"], 0.0, 1e-6);
  EXPECT_NEAR(m["nll"], 36 * std::log(2.0), 1e-4);
  EXPECT_NEAR(m["neg_elbo"], 36 * std::log(2.0), 1e-4);
}

TEST(Models, ScoresArePerSample) {
  PAE_DEVICE_UNDER_TEST(device);
  for (const auto& type : AutoEncoderRegistry::instance().names()) {
    auto model = build_autoencoder(small(type, "mlp"), {1, 8, 8});
    model->to(device);
    model->eval();
    auto x = torch::rand({7, 1, 8, 8}).to(device);
    auto s = model->scores(x);
    ASSERT_TRUE(s.count("recon_mse"));
    for (auto& kv : s) EXPECT_EQ(kv.second.sizes(), (std::vector<int64_t>{7})) << type << " " << kv.first;
    auto manual = (model->reconstruct(x) - x).pow(2).flatten(1).mean(1);
    EXPECT_TRUE(torch::allclose(s["recon_mse"], manual, 1e-5, 1e-7));
  }
}

TEST(Models, UnknownTypeListsRegisteredNames) {
  auto o = small("nae2", "mlp");
  auto msg = pae::testing::error_of([&] { build_autoencoder(o, {1, 8, 8}); });
  EXPECT_NE(msg.find("'nae2'"), std::string::npos) << msg;
  // The registered names as whole entries of the list ("ae" is also inside "nae2").
  EXPECT_EQ(pae::testing::listed_names(msg), AutoEncoderRegistry::instance().names()) << msg;
  EXPECT_EQ(pae::testing::listed_names(msg), (std::vector<std::string>{"aae", "ae", "dnf", "nae", "vae"})) << msg;
  // A second family under a taken name is refused, and the first stays.
  auto& registry = AutoEncoderRegistry::instance();
  msg = pae::testing::error_of([&] { registry.add("vae", registry.get("ae")); });
  EXPECT_NE(msg.find("model.type 'vae' is registered twice"), std::string::npos) << msg;
  EXPECT_EQ(build_autoencoder(small("vae", "mlp"), {1, 8, 8})->signature().rfind("vae/", 0), 0u);
}

TEST(Models, TheAeDecodesThroughASigmoidOrAsItIsForRealValuedData) {
  auto o = small("ae", "mlp");
  torch::manual_seed(0);
  auto pixels = build_autoencoder(o, {1, 1, 2});
  o.family<AeOptions>().output = "identity";
  torch::manual_seed(0);
  auto reals = build_autoencoder(o, {1, 1, 2});
  const auto z = 10 * torch::randn({64, 4});
  EXPECT_TRUE(torch::equal(reals->decode(z), reals->decode_logits(z)));
  EXPECT_TRUE(torch::allclose(pixels->decode(z), torch::sigmoid(reals->decode(z))));
  EXPECT_GT(reals->decode(z).abs().max().item<double>(), 1.0);
  // Its loss is the squared error of the values themselves.
  const auto x = 3 * torch::randn({8, 1, 1, 2});
  EXPECT_NEAR(reals->loss(x).loss.item<double>(), (reals->reconstruct(x) - x).pow(2).mean().item<double>(), 1e-5);
  o.recon_loss = "bce";
  const auto msg = pae::testing::error_of([&] { build_autoencoder(o, {1, 1, 2}); });
  EXPECT_NE(msg.find("model.output identity"), std::string::npos) << msg;
}
