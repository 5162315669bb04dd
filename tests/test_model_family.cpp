// A model family from outside the library: one options struct, one class, one registration line,
// and the config reads, checks, writes and trains it like a built-in family.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "pae/config.h"
#include "pae/data/npy.h"
#include "pae/models/autoencoder.h"
#include "pae/train/trainer.h"
#include "test_util.h"

using namespace pae;
using pae::testing::error_of;
using pae::testing::TempDir;

namespace {

/// The toy family's own keys.
struct ToyOptions {
  double code_penalty = 0.0;  ///< weight of mean |z|^2 in the loss
  int64_t width = 16;         ///< hidden width of its one-hidden-layer encoder and decoder
  void visit(OptionVisitor& v, const ModelOptions&) {
    v("code_penalty", code_penalty, at_least(0));
    v("width", width, positive());
  }
};

/// A tiny auto-encoder of its own (no shared network keys): flattened pixels through one hidden layer.
class ToyAE : public models::AutoEncoder {
 public:
  ToyAE(const ModelOptions& o, const models::ImageShape& s) : AutoEncoder(o, s), toy_(o.family<ToyOptions>()) {
    const int64_t pixels = s.channels * s.height * s.width;
    encoder_ = register_module(
        "encoder", torch::nn::Sequential(torch::nn::Flatten(), torch::nn::Linear(pixels, toy_.width), torch::nn::Tanh(),
                                         torch::nn::Linear(toy_.width, o.latent_dim)));
    decoder_ = register_module(
        "decoder", torch::nn::Sequential(torch::nn::Linear(o.latent_dim, toy_.width), torch::nn::Tanh(),
                                         torch::nn::Linear(toy_.width, pixels), torch::nn::Unflatten(1, s.sizes())));
  }
  torch::Tensor encode(const torch::Tensor& x) override { return encoder_->forward(x); }
  torch::Tensor decode_logits(const torch::Tensor& z) override { return decoder_->forward(z); }
  models::LossTerms loss(const torch::Tensor& x) override {
    const auto z = encode(x);
    const auto mse = (decode(z) - x).pow(2).mean();
    const auto penalty = z.pow(2).sum(1).mean();
    const auto total = mse + toy_.code_penalty * penalty;
    return {total, {{"loss", total.detach()}, {"mse", mse.detach()}, {"code_norm2", penalty.detach()}}};
  }
  const ToyOptions& toy() const { return toy_; }

 private:
  ToyOptions toy_;
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr};
};

void register_toy_once() {
  static const bool registered = [] {
    models::AutoEncoderRegistry::instance().add(
        "toy", models::family_with_options<ToyOptions>(
                   [](const ModelOptions& o, const models::ImageShape& s) { return std::make_shared<ToyAE>(o, s); },
                   /*uses_networks=*/false));
    return true;
  }();
  (void)registered;
}

}  // namespace

TEST(ModelFamily, AFamilyRegisteredFromOutsideIsReadCheckedAndWrittenByTheConfig) {
  register_toy_once();
  const Config c = parse_config("model:\n  type: toy\n  latent_dim: 3\n  code_penalty: 0.25\n  width: 8\n", "toy.yml");
  EXPECT_DOUBLE_EQ(c.model.family<ToyOptions>().code_penalty, 0.25);
  EXPECT_EQ(c.model.family<ToyOptions>().width, 8);
  // The resolved config holds its keys and none of the network keys it does not use, and parses back.
  const std::string yaml = to_yaml(c);
  EXPECT_NE(yaml.find("code_penalty: 0.25"), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find("arch"), std::string::npos) << yaml;
  EXPECT_EQ(to_yaml(parse_config(yaml, "resolved.yml")), yaml);
  // Its values are checked where they are given.
  auto msg = error_of([] { parse_config("model:\n  type: toy\n  code_penalty: -1\n", "toy.yml"); });
  EXPECT_NE(msg.find("toy.yml:3: key 'model.code_penalty': expected a number >= 0, got -1"), std::string::npos) << msg;
  msg = error_of([] { parse_config("model:\n  type: toy\n  arch: mlp\n", "toy.yml"); });
  EXPECT_NE(msg.find("toy.yml:3: key 'model.arch' is not used by model.type 'toy'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("has no encoder network"), std::string::npos) << msg;
  // Its keys mean nothing to another family, and another family's keys nothing to it.
  msg = error_of([] { parse_config("model:\n  type: ae\n  width: 4\n", "toy.yml"); });
  EXPECT_NE(msg.find("'model.width' is not used by model.type 'ae'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("it applies to model.type toy"), std::string::npos) << msg;
  msg = error_of([] { parse_config("model:\n  type: toy\n  beta: 4\n", "toy.yml"); });
  EXPECT_NE(msg.find("it applies to model.type vae"), std::string::npos) << msg;
  // A name registers once.
  msg = error_of([] {
    models::AutoEncoderRegistry::instance().add(
        "toy", models::family_with_options<ToyOptions>(
                   [](const ModelOptions& o, const models::ImageShape& s) { return std::make_shared<ToyAE>(o, s); }));
  });
  EXPECT_NE(msg.find("model.type 'toy' is registered twice"), std::string::npos) << msg;
}

TEST(ModelFamily, AFamilyRegisteredFromOutsideTrainsFromYaml) {
  register_toy_once();
  TempDir tmp;
  torch::manual_seed(0);
  data::write_npy(tmp.file("x_train.npy"), torch::rand({60, 1, 4, 4}));
  data::write_npy(tmp.file("x_test.npy"), torch::rand({20, 1, 4, 4}));
  std::ofstream(tmp.file("toy.yml")) << "data:\n  name: npy\n  path: " << tmp.file("x_{split}.npy")
                                     << "\n  val_size: 10\nmodel:\n  type: toy\n  latent_dim: 2\n  code_penalty: 0.5\n"
                                        "  width: 6\ntrain:\n  epochs: 2\n  batch_size: 10\n  num_samples: 4\n";
  const Config c = load_config(tmp.file("toy.yml"));
  train::RunOptions run{tmp.file("run"), "cpu", false, false, true};
  const auto summary = train::train_autoencoder(c, run);
  EXPECT_EQ(summary.epochs_completed, 2);
  // The run's model is the toy, built with the options the YAML gave.
  auto model = models::build_autoencoder(load_config(tmp.file("run/config.yml")).model, {1, 4, 4});
  auto* toy = dynamic_cast<ToyAE*>(model.get());
  ASSERT_NE(toy, nullptr);
  EXPECT_DOUBLE_EQ(toy->toy().code_penalty, 0.5);
  EXPECT_EQ(toy->toy().width, 6);
  // Its own loss terms reach the metrics.
  std::ifstream metrics(tmp.file("run/metrics.jsonl"));
  std::string line;
  ASSERT_TRUE(std::getline(metrics, line));
  EXPECT_NE(line.find("code_norm2"), std::string::npos) << line;
  EXPECT_EQ(data::read_npy(tmp.file("run/latents/test.npy")).sizes(), (std::vector<int64_t>{20, 2}));
}
