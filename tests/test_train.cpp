#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "pae/config.h"
#include "pae/data/npy.h"
#include "pae/models/autoencoder.h"
#include "pae/train/checkpoint.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "test_util.h"

using namespace pae;
using pae::testing::error_of;
using pae::testing::TempDir;

namespace {

Config tiny_config(const TempDir& tmp, int64_t epochs) {
  data::write_npy(tmp.file("x_train.npy"), torch::rand({96, 1, 8, 8}));
  data::write_npy(tmp.file("x_test.npy"), torch::rand({32, 1, 8, 8}));
  Config c = parse_config("", "test");
  c.data.name = "npy";
  c.data.path = tmp.file("x_{split}.npy");
  c.data.val_size = 16;
  c.model.arch = "mlp";
  c.model.hidden = {16};
  c.model.latent_dim = 3;
  c.train.epochs = epochs;
  c.train.batch_size = 20;
  c.train.num_samples = 8;
  c.train.eval_batch_size = 50;
  return c;
}

std::vector<torch::Tensor> params_of(const std::string& checkpoint, const Config& c) {
  auto model = models::build_autoencoder(c.model, {1, 8, 8});
  train::load_checkpoint(checkpoint, *model, nullptr, "");
  std::vector<torch::Tensor> out;
  for (auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

int count_lines(const std::string& path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

}  // namespace

TEST(Train, WritesTheRunDirectory) {
  TempDir tmp;
  Config c = tiny_config(tmp, 2);
  train::RunOptions run{tmp.file("run"), "cpu", false, false, true};
  auto summary = train::train_autoencoder(c, run);
  EXPECT_EQ(summary.epochs_completed, 2);
  EXPECT_TRUE(summary.test_metrics.count("mse"));
  for (const char* f : {"config.yml", "train.log", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt",
                        "recon.png", "samples.png", "summary.json", "latents/train.npy", "latents/val.npy",
                        "latents/test.npy", "latents/test_labels.npy"})
    EXPECT_TRUE(std::filesystem::exists(tmp.path() / "run" / f)) << f;
  EXPECT_EQ(count_lines(tmp.file("run/metrics.jsonl")), 2);
  EXPECT_EQ(data::read_npy(tmp.file("run/latents/train.npy")).sizes(), (std::vector<int64_t>{80, 3}));
  EXPECT_EQ(data::read_npy(tmp.file("run/latents/test.npy")).sizes(), (std::vector<int64_t>{32, 3}));
  // The resolved config in the run directory parses back to the same config.
  EXPECT_EQ(to_yaml(load_config(tmp.file("run/config.yml"))), to_yaml(c));
  // An existing run is never overwritten unasked.
  auto msg = error_of([&] { train::train_autoencoder(c, run); });
  EXPECT_NE(msg.find("--resume"), std::string::npos) << msg;
  run.force = true;
  EXPECT_NO_THROW(train::train_autoencoder(c, run));
  EXPECT_EQ(count_lines(tmp.file("run/metrics.jsonl")), 2);
}

TEST(Train, ResumeContinuesWithTheSameOptimizerState) {
  TempDir tmp;
  torch::set_num_threads(1);
  Config two = tiny_config(tmp, 2), one = tiny_config(tmp, 1);
  train::train_autoencoder(two, {tmp.file("straight"), "cpu", false, false, true});
  train::train_autoencoder(one, {tmp.file("resumed"), "cpu", false, false, true});
  train::train_autoencoder(two, {tmp.file("resumed"), "cpu", true, false, true});
  EXPECT_EQ(count_lines(tmp.file("resumed/metrics.jsonl")), 2);
  auto a = params_of(tmp.file("straight/checkpoints/last.pt"), two);
  auto b = params_of(tmp.file("resumed/checkpoints/last.pt"), two);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
}

TEST(Train, CheckpointOfAnotherModelIsAClearError) {
  TempDir tmp;
  Config c = tiny_config(tmp, 1);
  train::train_autoencoder(c, {tmp.file("run"), "cpu", false, false, true});
  Config other = c;
  other.model.latent_dim = 5;
  auto msg = error_of([&] { train::train_autoencoder(other, {tmp.file("run"), "cpu", true, false, true}); });
  EXPECT_NE(msg.find("z3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("z5"), std::string::npos) << msg;
  std::ofstream(tmp.file("junk.pt")) << "not a checkpoint";
  auto model = models::build_autoencoder(c.model, {1, 8, 8});
  msg = error_of([&] { train::load_checkpoint(tmp.file("junk.pt"), *model, nullptr, ""); });
  EXPECT_NE(msg.find("junk.pt"), std::string::npos) << msg;
}
