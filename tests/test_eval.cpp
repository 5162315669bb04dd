// pae-eval's library side on a tiny trained PAE: scores agree with what pae-flow wrote,
// evaluation sets are checked, and a flow of another AE is refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "pae/config.h"
#include "pae/data/npy.h"
#include "pae/eval/evaluate.h"
#include "pae/flows/latent_flow.h"
#include "pae/metrics/features.h"
#include "pae/models/autoencoder.h"
#include "pae/train/classifier_run.h"
#include "pae/train/flow_run.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "test_util.h"

using namespace pae;
using pae::testing::error_of;
using pae::testing::TempDir;

namespace {

Config tiny_pae(const TempDir& tmp) {
  torch::manual_seed(0);
  data::write_npy(tmp.file("x_train.npy"), torch::rand({96, 1, 8, 8}) * 0.5);
  data::write_npy(tmp.file("x_test.npy"), torch::rand({40, 1, 8, 8}) * 0.5);
  Config c = parse_config("", "test");
  c.data.name = "npy";
  c.data.path = tmp.file("x_{split}.npy");
  c.data.val_size = 16;
  c.model.arch = "mlp";
  c.model.hidden = {16};
  c.model.latent_dim = 4;
  c.train.epochs = 2;
  c.train.batch_size = 32;
  c.train.num_samples = 8;
  c.flow.layers = 2;
  c.flow.hidden = 8;
  return c;
}

}  // namespace

TEST(Eval, ScoresMatchTheFlowRunAndFormAnOodTable) {
  TempDir tmp;
  auto c = tiny_pae(tmp);
  train::RunOptions ro;
  ro.run_dir = tmp.file("ae");
  ro.quiet = true;
  train::train_autoencoder(c, ro);
  train::FlowRunOptions fo;
  fo.run_dir = tmp.file("ae/flow");
  fo.quiet = true;
  train::fit_latent_flow(c, train::latents_of_run(ro.run_dir), fo);

  Config loaded;
  auto ae = train::load_autoencoder(ro.run_dir, &loaded);
  auto flow = train::load_latent_flow(fo.run_dir);
  eval::check_flow_matches(fo.run_dir, ro.run_dir, flow->dim(), ae->latent_dim());
  auto test = eval::load_set("npy:test", loaded, {1, 8, 8});
  auto scores = eval::compute_scores(*ae, flow.get(), test.images, /*batch=*/7);
  for (const char* k : {"recon_mse", "latent_norm", "neg_log_p_z"}) ASSERT_TRUE(scores.count(k)) << k;
  // The flow run's log p(z) of the test split was computed from the saved latents: the same
  // numbers must come out of encoder -> flow here.
  auto written = data::read_npy(fo.run_dir + "/log_prob/test.npy").to(torch::kFloat64);
  EXPECT_LT((scores.at("neg_log_p_z") + written).abs().max().item<double>(), 1e-3);

  auto noise = eval::load_set("noise", loaded, {1, 8, 8}, 25);
  EXPECT_EQ(noise.images.sizes(), (std::vector<int64_t>{25, 1, 8, 8}));
  auto rows = eval::ood_table(scores, {{"noise", eval::compute_scores(*ae, flow.get(), noise.images)}});
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& r : rows) {
    EXPECT_EQ(r.n_in, 40);
    EXPECT_EQ(r.n_out, 25);
    EXPECT_GE(r.auroc, 0.0);
    EXPECT_LE(r.auroc, 1.0);
  }
  EXPECT_NE(eval::ood_markdown(rows).find("| noise |"), std::string::npos);

  // Another AE's flow: dimension mismatch, then a checksum mismatch.
  EXPECT_NE(error_of([&] { eval::check_flow_matches(fo.run_dir, ro.run_dir, 5, 4); }).find("latent_dim 4"),
            std::string::npos);
  data::write_npy(ro.run_dir + "/latents/train.npy", torch::randn({80, 4}));
  EXPECT_NE(error_of([&] { eval::check_flow_matches(fo.run_dir, ro.run_dir, 4, 4); }).find("checksum differs"),
            std::string::npos);
}

TEST(Eval, SetsOfTheWrongShapeOrEmptyAreErrors) {
  TempDir tmp;
  auto c = tiny_pae(tmp);
  data::write_npy(tmp.file("y_test.npy"), torch::rand({5, 1, 10, 10}));
  Config other = c;
  other.data.path = tmp.file("y_{split}.npy");
  EXPECT_NE(error_of([&] { eval::load_set("npy:test", other, {1, 8, 8}); }).find("1x10x10"), std::string::npos);
  other.data.path = tmp.file("x_{split}.npy");
  other.data.classes = {7};  // every label is 0
  EXPECT_NE(error_of([&] { eval::load_set("npy:test", other, {1, 8, 8}); }), "");
  EXPECT_NE(error_of([&] { eval::load_set("no-such-set", c, {1, 8, 8}); }).find("no-such-set"), std::string::npos);
}

TEST(Eval, DomainClassifierIsTrainedByPaeTrainAndLoadedForFid) {
  TempDir tmp;
  torch::manual_seed(1);
  // Two classes that differ in brightness: any working classifier separates them.
  auto labels = torch::arange(2000, torch::kInt64).remainder(2);
  auto images = (torch::rand({2000, 1, 8, 8}) * 0.4 + labels.view({-1, 1, 1, 1}).to(torch::kFloat) * 0.5);
  for (const char* split : {"train", "test"}) {
    data::write_npy(tmp.file(std::string("x_") + split + ".npy"), images);
    data::write_npy(tmp.file(std::string("y_") + split + ".npy"), labels);
  }
  Config c = parse_config("model:\n  type: classifier\ntrain:\n  epochs: 4\n", "test");
  c.data.name = "npy";
  c.data.path = tmp.file("x_{split}.npy");
  c.data.labels_path = tmp.file("y_{split}.npy");
  c.data.val_size = 200;
  train::RunOptions ro;
  ro.run_dir = tmp.file("clf");
  ro.quiet = true;
  EXPECT_NE(error_of([&] { metrics::domain_classifier(ro.run_dir); }).find("pae-train --config"), std::string::npos);
  const auto trained = train::train_classifier(c, ro);
  EXPECT_GT(trained.test_accuracy, 0.95);
  EXPECT_EQ(trained.dataset, "npy");
  // One metrics line per epoch, with the validation accuracy.
  const auto log = read_text(ro.run_dir + "/metrics.jsonl");
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 4);
  EXPECT_NE(log.find("\"val_accuracy\""), std::string::npos);

  metrics::DomainClassifierInfo info;
  auto net = metrics::domain_classifier(ro.run_dir, &info, /*quiet=*/true);
  EXPECT_DOUBLE_EQ(info.test_accuracy, trained.test_accuracy);
  EXPECT_EQ(info.epochs, trained.model_epoch);
  EXPECT_EQ(trained.epochs, 4);
  auto f = net->features(images.slice(0, 0, 10));
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{10, 128}));
  EXPECT_TRUE(torch::allclose(metrics::domain_classifier(ro.run_dir, nullptr, true)->features(images.slice(0, 0, 10)), f));
  EXPECT_NE(net->describe().find("test accuracy"), std::string::npos);

  // An existing run is kept unless asked; a dataset without labels cannot train a classifier.
  EXPECT_NE(error_of([&] { train::train_classifier(c, ro); }).find("--force"), std::string::npos);
  c.data.labels_path.clear();
  ro.run_dir = tmp.file("clf2");
  EXPECT_NE(error_of([&] { train::train_classifier(c, ro); }).find("single label"), std::string::npos);
}
