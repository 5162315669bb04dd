// pae-eval's library side on a tiny trained PAE: scores agree with what pae-flow wrote,
// evaluation sets are checked, and a flow of another AE is refused.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <set>

#include "pae/config.h"
#include "pae/data/npy.h"
#include "pae/eval/evaluate.h"
#include "pae/eval/features.h"
#include "pae/eval/ood_scores.h"
#include "pae/eval/pae.h"
#include "pae/eval/reports.h"
#include "pae/eval/restore.h"
#include "pae/flows/latent_flow.h"
#include "pae/metrics/complexity.h"
#include "pae/metrics/ood.h"
#include "pae/models/autoencoder.h"
#include "pae/report/html.h"
#include "pae/report/svg.h"
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

/// Trains the tiny AE into tmp/ae and its flow into tmp/ae/flow, both on `device`.
std::pair<train::RunOptions, train::RunOptions> train_tiny_pae(const TempDir& tmp, const Config& c,
                                                               const std::string& device = "cpu") {
  train::RunOptions ro;
  ro.run_dir = tmp.file("ae");
  ro.device = device;
  ro.quiet = true;
  train::train_autoencoder(c, ro);
  train::RunOptions fo;
  fo.run_dir = tmp.file("ae/flow");
  fo.device = device;
  fo.quiet = true;
  train::fit_latent_flow(c, train::latents_of_run(ro.run_dir), fo);
  return {ro, fo};
}

/// A tiny PAE trained into a fresh folder (tmp/ae, tmp/ae/flow) and loaded.
struct TinyPae {
  TempDir tmp;
  Config c;
  train::RunOptions ro;
  train::RunOptions fo;
  eval::Pae pae;
  TinyPae() : c(tiny_pae(tmp)), pae(trained()) {}

 private:
  eval::Pae trained() {
    std::tie(ro, fo) = train_tiny_pae(tmp, c);
    return eval::Pae::load(ro.run_dir, fo.run_dir);
  }
};

}  // namespace

TEST(Eval, ScoresMatchTheFlowRunAndFormAnOodTable) {
  PAE_DEVICE_UNDER_TEST(device);
  TempDir tmp;
  auto c = tiny_pae(tmp);
  const auto [ro, fo] = train_tiny_pae(tmp, c, device.str());

  auto pae = eval::Pae::load(ro.run_dir, fo.run_dir, "", device.str());
  EXPECT_EQ(pae.device(), device);
  EXPECT_EQ(pae.flow()->parameters().front().device(), device);
  const Config& loaded = pae.config();
  auto test = eval::load_set("npy:test", loaded, {1, 8, 8});
  auto scores = pae.scores(test.images, /*batch=*/7);
  for (const char* k : {"recon_mse", "latent_norm", "neg_log_p_z"}) ASSERT_TRUE(scores.count(k)) << k;
  // The flow run's log p(z) of the test split was computed from the saved latents: the same
  // numbers must come out of encoder -> flow here.
  auto written = data::read_npy(fo.run_dir + "/log_prob/test.npy").to(torch::kFloat64);
  EXPECT_LT((scores.at("neg_log_p_z") + written).abs().max().item<double>(), 1e-3);
  EXPECT_LT((pae.log_p_z(pae.encode(test.images)) - written).abs().max().item<double>(), 1e-3);

  // run_ood end to end: the in-distribution set defaults to the AE's own test split, every
  // (set, score) row is the AUROC of the scores it writes, and ood.json holds those rows.
  eval::OodOptions oo;
  oo.ood = {"noise", "constant"};
  oo.limit = 25;
  const auto report = eval::run_ood(pae, oo);
  EXPECT_EQ(report.in, "npy:test");
  EXPECT_EQ(report.sizes.at("npy:test"), 25);
  // 2 sets x (recon_mse, latent_norm, neg_log_p_z, neg_log_p_x, either_tail, neg_log_p_x_complexity, and the
  // _typicality and _views of both densities)
  ASSERT_EQ(report.rows.size(), 20u);
  EXPECT_EQ(report.pixel_sigma, pae.pixel_sigma_source());
  report.write(pae, tmp.file("ood"));
  const auto to_vec = [](const at::Tensor& t) {
    const auto c = t.to(torch::kFloat64).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  const auto in_scores = report.scores.at("npy:test");
  EXPECT_TRUE(torch::allclose(in_scores.at("recon_mse"), scores.at("recon_mse").slice(0, 0, 25)));
  const auto json = nlohmann::json::parse(read_text(tmp.file("ood/ood.json")));
  ASSERT_EQ(json["results"].size(), 20u);
  EXPECT_NE(json["protocol"]["neg_log_p_x"].get<std::string>().find("residual_sigma"), std::string::npos);
  for (const auto& row : json["results"]) {
    const std::string set = row["set"], score = row["score"];
    const auto file = tmp.file("ood/scores/npy_test__" + score + ".npy");
    const auto out_file = tmp.file("ood/scores/" + set + "__" + score + ".npy");
    const double expected = metrics::roc_auc(to_vec(data::read_npy(file)), to_vec(data::read_npy(out_file)));
    EXPECT_NEAR(row["auroc"].get<double>(), expected, 1e-6) << set << " " << score;  // .npy holds float32 scores
    EXPECT_EQ(row["n_in"].get<int64_t>(), 25);
  }
  EXPECT_NE(read_text(tmp.file("ood/ood.md")).find("| noise |"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp.file("ood/roc_neg_log_p_z.svg")));

  // The data likelihood: -log p(z) plus the Gaussian NLL of the pixels around the decoded mean,
  // computed here by hand with the sigma run_ood stored.
  const auto sigma = data::read_npy(ro.run_dir + "/residual_sigma/" + pae.checkpoint() + ".npy").to(torch::kFloat64);
  const auto x = test.images.slice(0, 0, 9);
  const auto with_x = pae.scores(x, 4);
  const auto resid = (x.to(torch::kFloat64) - pae.decode(pae.encode(x)).to(torch::kFloat64)) / sigma;
  const auto nll = 0.5 * resid.pow(2).flatten(1).sum(1) + sigma.log().sum() + 0.5 * 64 * std::log(2 * M_PI);
  EXPECT_LT((with_x.at("neg_log_p_x") - with_x.at("neg_log_p_z") - nll).abs().max().item<double>(), 1e-3);

  // either_tail: the larger tail surprise of the two terms under the reference images (the first
  // half of the validation split), by hand.
  const auto val = pae.scores(eval::load_set("npy:val", loaded, {1, 8, 8}).images.slice(0, 0, 8));
  const auto residual = [](const std::map<std::string, at::Tensor>& s) {
    return s.at("neg_log_p_x") - s.at("neg_log_p_z");
  };
  const auto by_hand = metrics::either_tail(to_vec(val.at("neg_log_p_z")), to_vec(in_scores.at("neg_log_p_z")),
                                            to_vec(residual(val)), to_vec(residual(in_scores)));
  const auto reported = to_vec(in_scores.at("either_tail"));
  ASSERT_EQ(reported.size(), by_hand.size());
  for (size_t i = 0; i < by_hand.size(); ++i) EXPECT_NEAR(reported[i], by_hand[i], 1e-9) << i;
  EXPECT_EQ(json["protocol"]["reference"].get<std::string>(), "npy:val[0:8] (8 images)");

  // Another AE's flow: dimension mismatch, then a checksum mismatch.
  EXPECT_NE(error_of([&] { eval::check_flow_matches(fo.run_dir, ro.run_dir, 5, 4); }).find("latent_dim 4"),
            std::string::npos);
  // Another checkpoint than the run's model: fine alone, refused with the flow fitted on the model's latents.
  EXPECT_EQ(eval::Pae::load(ro.run_dir, "", "last").checkpoint(), "last");
  EXPECT_EQ(pae.checkpoint(), c.train.model_checkpoint);
  EXPECT_NE(error_of([&] { eval::Pae::load(ro.run_dir, fo.run_dir, "last"); }).find("drop --flow or --checkpoint"),
            std::string::npos);
  data::write_npy(ro.run_dir + "/latents/train.npy", torch::randn({80, 4}));
  EXPECT_NE(error_of([&] { eval::Pae::load(ro.run_dir, fo.run_dir); }).find("checksum differs"), std::string::npos);
}

TEST(Eval, RestorationKeepsObservedPixelsAndIsReproducible) {
  TinyPae tiny;
  auto& [tmp, c, ro, fo, pae] = tiny;
  const auto truth = eval::load_set("npy:test", pae.config(), {1, 8, 8}, 6).images;
  eval::RestoreOptions o;
  o.map.steps = 30;
  o.map.restarts = 2;
  o.samples = 8;
  const auto left = data::parse_corruption("left", {1, 8, 8});
  const auto r = eval::restore(pae, truth, left, o);
  ASSERT_EQ(r.samples.sizes(), (std::vector<int64_t>{6, 8, 1, 8, 8}));
  const auto kept = r.kept, missing = r.kept.logical_not();
  EXPECT_EQ(missing.sum().item<int64_t>(), 6 * 8 * 4);
  for (const auto& t : {r.map, r.mean, r.mean_fill, r.ae_fill})
    EXPECT_TRUE(torch::equal(t.masked_select(kept), truth.masked_select(kept)));
  EXPECT_TRUE(torch::all(r.std.masked_select(kept) == 0).item<bool>());
  EXPECT_GT(r.std.masked_select(missing).min().item<float>(), 0.0f);
  for (const auto& p : pae.ae().parameters()) EXPECT_TRUE(p.requires_grad());  // unfrozen afterwards
  const auto cov = eval::coverage(r, {0.5, 0.68, 0.95, 0.99});
  for (size_t i = 0; i < cov.size(); ++i) {
    EXPECT_GE(cov[i], i ? cov[i - 1] : 0.0);
    EXPECT_LE(cov[i], 1.0);
  }
  EXPECT_TRUE(torch::equal(eval::restore(pae, truth, left, o).map, r.map));
  // Noise: nothing is kept, and the corrupted image's error is the noise variance.
  const auto noisy = eval::restore(pae, truth, data::parse_corruption("noise:0.1:noclip", {1, 8, 8}), o);
  EXPECT_FALSE(torch::any(noisy.kept).item<bool>());
  EXPECT_NEAR(eval::corrupted_mse(noisy, noisy.corrupted), 0.01, 0.003);
  // The likelihood adds the noise in quadrature; the intervals of clean pixels do not.
  EXPECT_TRUE(torch::allclose(noisy.sigma.pow(2), noisy.residual_sigma.pow(2) + 0.01, 1e-5, 1e-7));
  EXPECT_TRUE(torch::equal(r.sigma, r.residual_sigma));
  // Report folders name the corruption with safe characters.
  EXPECT_EQ(eval::restore_folder(data::parse_corruption("noise:" + eval::number_text(0.5), {1, 8, 8})), "denoise_0.5");
  EXPECT_EQ(eval::restore_folder(data::parse_corruption("columns:2-5", {1, 8, 8})), "inpaint_columns_2-5");
}

TEST(Eval, ResidualSigmaIsStoredWithTheRunAndRecomputedForOtherWeights) {
  TinyPae tiny;
  auto& [tmp, c, ro, fo, pae] = tiny;
  std::string source;
  const auto first = eval::stored_residual_sigma(pae, 16, &source);
  const auto npy = tmp.file("ae/residual_sigma/" + pae.checkpoint() + ".npy");
  EXPECT_NE(source.find("computed now"), std::string::npos) << source;
  ASSERT_TRUE(fs::exists(npy));
  EXPECT_TRUE(torch::equal(first, eval::residual_sigma(pae, 16)));
  // Loaded again: read from the file, not computed.
  data::write_npy(npy, first * 2);  // a marker only the file can return
  auto again = eval::Pae::load(ro.run_dir, fo.run_dir);
  EXPECT_TRUE(torch::equal(eval::stored_residual_sigma(again, 16, &source), first * 2));
  EXPECT_EQ(source, npy);
  // Other weights (a retrained or resumed run): computed again and replaced.
  {
    torch::NoGradGuard no_grad;
    again.ae().parameters().front().add_(0.05);
  }
  const auto changed = eval::stored_residual_sigma(again, 16, &source);
  EXPECT_NE(source.find("computed now"), std::string::npos) << source;
  EXPECT_TRUE(torch::equal(changed, eval::residual_sigma(again, 16)));
  EXPECT_TRUE(torch::equal(data::read_npy(npy), changed));
  // Another image count is another measurement.
  eval::stored_residual_sigma(again, 8, &source);
  EXPECT_NE(source.find("computed now"), std::string::npos) << source;
}

TEST(Eval, PosteriorChainAndBernoulliRestorationsKeepObservedPixels) {
  TinyPae tiny;
  auto& [tmp, c, ro, fo, pae] = tiny;
  const auto truth = eval::load_set("npy:test", pae.config(), {1, 8, 8}, 4).images;
  eval::RestoreOptions o;
  o.map.steps = 20;
  o.samples = 6;
  const auto left = data::parse_corruption("left", {1, 8, 8});
  const auto laplace = eval::restore(pae, truth, left, o);
  o.chain.steps = 5;
  const auto chained = eval::restore(pae, truth, left, o);
  EXPECT_TRUE(torch::equal(chained.map, laplace.map));           // the chain starts after the MAP
  EXPECT_FALSE(torch::equal(chained.samples, laplace.samples));  // and moves the samples
  EXPECT_GT(chained.accepted, 0.0);
  EXPECT_LE(chained.accepted, 1.0);
  o.map.likelihood = inference::Likelihood::bernoulli;
  const auto bern = eval::restore(pae, truth, left, o);
  EXPECT_TRUE(torch::equal(bern.map.masked_select(bern.kept), truth.masked_select(bern.kept)));
  EXPECT_NE(error_of([&] {
              eval::restore(pae, truth, data::parse_corruption("noise:0.1", {1, 8, 8}), o);
            }).find("Bernoulli likelihood applies to masks"),
            std::string::npos);
}

TEST(Eval, FlowResumedOnAnotherAutoEncodersLatentsIsRefused) {
  TempDir tmp;
  auto c = tiny_pae(tmp);
  auto [ro, fo] = train_tiny_pae(tmp, c);
  const auto json_before = read_text(tmp.file("ae/flow/latents.json"));
  // Another AE of the same latent size.
  auto other = c;
  other.train.seed = 3;
  train::RunOptions ro2 = ro;
  ro2.run_dir = tmp.file("ae2");
  train::train_autoencoder(other, ro2);
  auto longer = c;
  longer.train.epochs = c.train.epochs + 1;
  fo.resume = true;
  const auto msg = error_of([&] { train::fit_latent_flow(longer, train::latents_of_run(ro2.run_dir), fo); });
  EXPECT_NE(msg.find("are not the ones the flow started on"), std::string::npos) << msg;
  EXPECT_EQ(read_text(tmp.file("ae/flow/latents.json")), json_before);  // untouched
  // Its own latents: resumed.
  EXPECT_NO_THROW(train::fit_latent_flow(longer, train::latents_of_run(ro.run_dir), fo));
}

TEST(Eval, OodTableRowsAreComputedByHand) {
  // in: 0 1 2 3; out: 2.5 3.5 and 0 (a tie with the in-distribution 0).
  const std::map<std::string, at::Tensor> in = {{"s", torch::tensor({0.0, 1.0, 2.0, 3.0}, torch::kFloat64)}};
  const auto rows = eval::ood_table(in, {{"far", {{"s", torch::tensor({2.5, 3.5}, torch::kFloat64)}}},
                                         {"tied", {{"s", torch::tensor({0.0, 3.5}, torch::kFloat64)}}}});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].set, "far");
  EXPECT_DOUBLE_EQ(rows[0].auroc, 7.0 / 8);  // 2.5 beats 3 of 4, 3.5 beats 4 of 4
  // 95% TPR needs both OoD points flagged: threshold 2.5 flags in-distribution 3 only.
  EXPECT_DOUBLE_EQ(rows[0].fpr_at_95_tpr, 0.25);
  // Ranked: 3.5 (OoD), 3 (in), 2.5 (OoD): precision 1 at recall 1/2, 2/3 at recall 1.
  EXPECT_DOUBLE_EQ(rows[0].average_precision, 0.5 * 1 + 0.5 * 2.0 / 3);
  EXPECT_EQ(rows[0].n_in, 4);
  EXPECT_EQ(rows[0].n_out, 2);
  EXPECT_DOUBLE_EQ(rows[1].auroc, (0.5 + 4.0) / 8);  // 0 ties with one in-distribution 0
  const auto md = eval::ood_markdown(rows);
  EXPECT_NE(md.find("| far | 0.8750 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| tied | 0.5625 |"), std::string::npos) << md;
}

TEST(Eval, UsersOwnImagesAreSets) {
  TempDir tmp;
  auto c = tiny_pae(tmp);
  data::write_npy(tmp.file("mine.npy"), torch::full({6, 1, 8, 8}, 0.25));
  const auto set = eval::load_set("npy:" + tmp.file("mine.npy"), c, {1, 8, 8});
  EXPECT_EQ(set.size(), 6);
  EXPECT_TRUE(torch::equal(set.images, torch::full({6, 1, 8, 8}, 0.25)));
  // "npy:test" still names the split of an AE trained on an npy dataset.
  EXPECT_EQ(eval::load_set("npy:test", c, {1, 8, 8}).size(), 40);
  EXPECT_NE(error_of([&] {
              eval::load_set("npy:" + tmp.file("none.npy"), c, {1, 8, 8});
            }).find("none.npy"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              eval::load_set("folder:" + tmp.file("no-folder"), c, {1, 8, 8});
            }).find("no-folder"),
            std::string::npos);
}

TEST(Eval, HoldoutSetIsTheClassesKeptOutOfTraining) {
  TempDir tmp;
  auto c = tiny_pae(tmp);
  data::write_npy(tmp.file("y_test.npy"), torch::arange(40, torch::kInt64) % 4);
  c.data.labels_path = tmp.file("y_{split}.npy");
  EXPECT_NE(error_of([&] { eval::load_set("holdout", c, {1, 8, 8}); }).find("data.holdout_classes"), std::string::npos);
  c.data.holdout_classes = {2};
  const auto in = eval::load_set("npy:test", c, {1, 8, 8});
  const auto out = eval::load_set("holdout", c, {1, 8, 8});
  EXPECT_EQ(in.size(), 30);
  EXPECT_EQ(out.size(), 10);
  EXPECT_TRUE(torch::all(out.labels == 2).item<bool>());
  EXPECT_FALSE(torch::any(in.labels == 2).item<bool>());
  EXPECT_EQ(out.name, "holdout");
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
  EXPECT_NE(error_of([&] { eval::domain_classifier(ro.run_dir); }).find("pae-train --config"), std::string::npos);
  const auto trained = train::train_classifier(c, ro);
  EXPECT_GT(trained.test_accuracy, 0.95);
  EXPECT_EQ(trained.dataset, "npy");
  // One metrics line per epoch, with the validation accuracy.
  const auto log = read_text(ro.run_dir + "/metrics.jsonl");
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 4);
  EXPECT_NE(log.find("\"val_accuracy\""), std::string::npos);

  eval::DomainClassifierInfo info;
  auto net = eval::domain_classifier(ro.run_dir, &info, /*quiet=*/true);
  EXPECT_DOUBLE_EQ(info.test_accuracy, trained.test_accuracy);
  EXPECT_EQ(info.epochs, trained.model_epoch);
  EXPECT_EQ(trained.epochs, 4);
  auto f = net->features(images.slice(0, 0, 10));
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{10, 128}));
  EXPECT_TRUE(torch::allclose(eval::domain_classifier(ro.run_dir, nullptr, true)->features(images.slice(0, 0, 10)), f));
  EXPECT_NE(net->describe().find("test accuracy"), std::string::npos);

  // An existing run is kept unless asked; a dataset without labels cannot train a classifier.
  EXPECT_NE(error_of([&] { train::train_classifier(c, ro); }).find("--force"), std::string::npos);
  // lr 1e6 for over 200 steps on a harder task (four faint class templates under noise): the
  // training loss explodes past the uniform guess's, an error instead of a success.
  {
    torch::manual_seed(2);
    const auto y4 = torch::arange(2000, torch::kInt64).remainder(4);
    const auto x4 = torch::rand({2000, 1, 8, 8}) * 0.8 + torch::rand({4, 1, 8, 8}).index_select(0, y4) * 0.2;
    for (const char* split : {"train", "test"}) {
      data::write_npy(tmp.file(std::string("x4_") + split + ".npy"), x4);
      data::write_npy(tmp.file(std::string("y4_") + split + ".npy"), y4);
    }
    Config diverging = c;
    diverging.data.path = tmp.file("x4_{split}.npy");
    diverging.data.labels_path = tmp.file("y4_{split}.npy");
    diverging.train.lr = 1e6;
    diverging.train.batch_size = 64;
    diverging.train.epochs = 8;  // 29 steps an epoch
    train::RunOptions dro = ro;
    dro.run_dir = tmp.file("clf_lr");
    const auto msg = error_of([&] { train::train_classifier(diverging, dro); });
    EXPECT_NE(msg.find("divergence check: the trained classifier has test accuracy"), std::string::npos) << msg;
    EXPECT_NE(msg.find("after 232 optimizer steps"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(dro.run_dir + "/classifier.json"));
    diverging.train.lr = 1e-3;  // the same run at a sane rate passes the check
    dro.run_dir = tmp.file("clf_sane");
    EXPECT_GT(train::train_classifier(diverging, dro).test_accuracy, 0.5);
  }
  c.data.labels_path.clear();
  ro.run_dir = tmp.file("clf2");
  EXPECT_NE(error_of([&] { train::train_classifier(c, ro); }).find("single label"), std::string::npos);
  // A stray training label (200 among 0, 1) and a test label the training split lacks: refused,
  // naming the labels file, before a run directory exists.
  c.data.labels_path = tmp.file("y_{split}.npy");
  auto stray = labels.clone();
  stray.slice(0, 0, 100).fill_(200);  // some of them land in the training carve
  data::write_npy(tmp.file("y_train.npy"), stray);
  auto msg = error_of([&] { train::train_classifier(c, ro); });
  EXPECT_NE(msg.find("are not 0..2 each present (3 distinct labels from 0 to 200)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("y_{split}.npy"), std::string::npos) << msg;
  data::write_npy(tmp.file("y_train.npy"), labels);
  auto test_labels = labels.clone();
  test_labels[3] = 5;
  data::write_npy(tmp.file("y_test.npy"), test_labels);
  msg = error_of([&] { train::train_classifier(c, ro); });
  EXPECT_NE(msg.find("a label of the test split of"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(ro.run_dir));
}

TEST(Report, HtmlPageOfATinyPaeHasEverySectionAndNothingExternal) {
  TinyPae tiny;
  auto& [tmp, c, ro, fo, pae] = tiny;
  eval::OodOptions oo;
  oo.ood = {"noise"};
  eval::write_ood(pae, oo, fo.run_dir + "/ood", false);
  eval::write_recon(pae, "test", 0, ro.run_dir, false);

  report::HtmlReportOptions options;
  options.runs = {ro.run_dir};
  const auto path = tmp.file("report.html");
  report::write_html_report(options, path, false);
  const std::string html = read_text(path);
  for (const char* part :
       {"class=\"summary\"", "class=\"config\"", "class=\"curves\"", "class=\"images\"", "class=\"flow\"",
        "OoD detection: flow/ood/ood.json", "reconstruction error: recon_test.json", "Score histograms", "ROC curves",
        "ae: mse", "flow: nll", "auroc", "Protocol"})
    EXPECT_NE(html.find(part), std::string::npos) << part;
  const auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = html.find(what); at != std::string::npos; at = html.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("<img "), count("src=\"data:image/png;base64,"));  // every image embedded
  EXPECT_GE(count("<img "), 2u);                                     // recon.png, samples.png
  EXPECT_GE(count("<svg "), 8u);                                     // curves, ROC, histograms
  EXPECT_EQ(count("<script"), 0u);
  EXPECT_EQ(count("http"), count("xmlns=\"http://www.w3.org/2000/svg\""));  // no external asset
  // The config shown is the run's, escaped.
  EXPECT_NE(html.find(report::xml_escape(read_text(ro.run_dir + "/config.yml"))), std::string::npos);
  // An existing page is kept unless asked; several runs get a comparison section.
  EXPECT_NE(error_of([&] { report::write_html_report(options, path, false); }).find("--force"), std::string::npos);
  options.runs = {ro.run_dir, fo.run_dir};
  report::write_html_report(options, path, true);
  EXPECT_NE(read_text(path).find("class=\"comparison\""), std::string::npos);
  options.runs = {tmp.file("nowhere")};
  EXPECT_NE(error_of([&] { report::html_report(options); }).find("nowhere"), std::string::npos);
}

TEST(Eval, FlowSetsAtAnExplicitTemperature) {
  TinyPae t;
  eval::GenerateOptions o;
  o.n = 16;
  const auto cold = eval::generate_set("flow:0.5", t.pae, o);
  torch::manual_seed(0);  // generate_set seeds every set with 0
  EXPECT_TRUE(torch::equal(cold.images, t.pae.sample(16, 0.5)));
  EXPECT_NE(cold.what.find("T = 0.5"), std::string::npos) << cold.what;
  EXPECT_FALSE(torch::equal(cold.images, eval::generate_set("flow", t.pae, o).images));
  o.temperature = 0.5;  // --temperature: the same samples as flow:0.5
  EXPECT_TRUE(torch::equal(cold.images, eval::generate_set("flow", t.pae, o).images));
  for (const std::string bad : {"flow:0", "flow:warm", "flow:0.5x", "flow:11"})
    EXPECT_NE(error_of([&] { eval::generate_set(bad, t.pae, o); }).find("expected a temperature"), std::string::npos)
        << bad;
}

namespace {
/// Pixels as features (times 100: the tiny decoder's images differ by little): FID without a trained network.
struct PixelFeatures : eval::FeatureExtractor {
  at::Tensor features(const at::Tensor& images) override { return images.flatten(1).to(torch::kFloat64) * 100; }
  std::string describe() const override { return "pixels"; }
};
}  // namespace

TEST(Eval, SamplingTemperatureIsChosenByFidOnHeldOutImages) {
  TinyPae t;
  PixelFeatures pixels;
  // The reference: samples at T = 1.3 drawn with another seed. The choice must find 1.3, and each
  // FID must be the one of the seed-1 samples at that T (not the reported sets' seed 0).
  torch::manual_seed(5);
  const auto reference = t.pae.sample(3000, 1.3);
  const std::vector<double> grid = {0.7, 1.0, 1.3, 1.6};
  const auto c = eval::choose_temperature(t.pae, pixels, reference, "ref", grid, 3000, 100);
  EXPECT_DOUBLE_EQ(c.temperature, 1.3);
  EXPECT_FALSE(c.at_edge);
  ASSERT_EQ(c.fid.size(), grid.size());
  const auto ref_stats = metrics::gaussian_stats(pixels.features(reference));
  for (size_t i = 0; i < grid.size(); ++i) {
    torch::manual_seed(1);
    const auto stats = metrics::gaussian_stats(pixels.features(t.pae.sample(3000, grid[i])));
    EXPECT_NEAR(c.fid[i].second, metrics::frechet_parts(stats, ref_stats).total(), 1e-9) << grid[i];
    EXPECT_DOUBLE_EQ(c.fid[i].first, grid[i]);
  }
  // A reference beyond the grid: the choice is its end, flagged.
  torch::manual_seed(5);
  const auto hot = eval::choose_temperature(t.pae, pixels, t.pae.sample(3000, 2.5), "hot", {0.5, 1.0}, 3000, 100);
  EXPECT_DOUBLE_EQ(hot.temperature, 1.0);
  EXPECT_TRUE(hot.at_edge);
  EXPECT_EQ(eval::default_temperature_grid().front(), 0.5);
  EXPECT_EQ(eval::default_temperature_grid().size(), 16u);
}

TEST(Eval, EvaluationsRunOnTheDeviceAskedForOrTheRunsOwn) {
  const c10::Device cpu(c10::kCPU);
  EXPECT_EQ(eval::evaluation_device("", "cpu", "RUN"), cpu);
  EXPECT_EQ(eval::evaluation_device("cpu", "cuda", "RUN"), cpu);  // --device wins
  if (torch::cuda::is_available()) {
    EXPECT_TRUE(eval::evaluation_device("", "cuda", "RUN").is_cuda());
    EXPECT_NE(error_of([] { eval::evaluation_device("", "cuda:99", "RUN"); }).find("RUN/config.yml train.device"),
              std::string::npos);
  } else {  // a run trained on a GPU is evaluated on this machine's CPU (with a warning)
    EXPECT_EQ(eval::evaluation_device("", "cuda", "RUN"), cpu);
    EXPECT_EQ(eval::evaluation_device("", "cuda:1", "RUN"), cpu);
  }
  // Asked for explicitly, a device that is not here is an error, never the CPU instead.
  EXPECT_NE(error_of([] { eval::evaluation_device("cuda:99", "cpu", "RUN"); }).find("cuda:99"), std::string::npos);
  EXPECT_NE(
      error_of([] { eval::evaluation_device("", "tpu", "RUN"); }).find("RUN/config.yml train.device: device 'tpu'"),
      std::string::npos);
}

TEST(Eval, AnEvaluationFolderIsHeldWhileWrittenAndItsReportDescribesEveryScoreFile) {
  TinyPae tiny;
  auto& [tmp, c, ro, fo, pae] = tiny;
  const auto out = tmp.file("ood");
  eval::OodOptions oo;
  oo.ood = {"noise", "constant"};
  oo.limit = 20;
  eval::write_ood(pae, oo, out, false);
  {  // another evaluation into the folder meanwhile: refused, naming the holder
    const eval::ReportFolder held(out, "recon_test.json", false);
    const auto msg = error_of([&] { eval::write_ood(pae, oo, out, true); });
    EXPECT_NE(msg.find(out + " is in use by process " + std::to_string(::getpid())), std::string::npos) << msg;
  }
  // Replaced with one set and one score: the files of the first report are gone.
  oo.ood = {"noise"};
  oo.scores = {"recon_mse"};
  eval::write_ood(pae, oo, out, true);
  const auto json = nlohmann::json::parse(read_text(out + "/ood.json"));
  std::set<std::string> described, on_disk;
  for (const auto& row : json["results"]) {
    described.insert(row["set"].get<std::string>() + "__" + row["score"].get<std::string>() + ".npy");
    described.insert("npy_test__" + row["score"].get<std::string>() + ".npy");
  }
  for (const auto& e : fs::directory_iterator(out + "/scores")) on_disk.insert(e.path().filename().string());
  EXPECT_EQ(on_disk, described);
  EXPECT_TRUE(fs::exists(out + "/roc_recon_mse.svg"));
  EXPECT_FALSE(fs::exists(out + "/roc_neg_log_p_z.svg"));
}

TEST(Eval, DerivedOodScoresAreTheirDefinitionsByHand) {
  TinyPae tiny;
  auto& [tmp, c, ro, fo, pae] = tiny;
  const auto sigma = eval::stored_residual_sigma(pae);
  pae.set_pixel_sigma(sigma, "test");
  const auto reference = eval::load_set("npy:val", pae.config(), {1, 8, 8}).images.slice(0, 0, 8);
  const eval::OodScorer scorer(pae, reference, "ref");
  const auto x = eval::load_set("npy:test", pae.config(), {1, 8, 8}).images.slice(0, 0, 6);
  const auto s = scorer(x);
  const auto base = pae.scores(x);
  const auto ref = pae.scores(reference);
  // Typicality: distance to the reference's mean; views: the mean over the image and its shifts.
  EXPECT_TRUE(
      torch::allclose(s.at("neg_log_p_z_typicality"), (base.at("neg_log_p_z") - ref.at("neg_log_p_z").mean()).abs()));
  auto down = torch::zeros_like(x), up = torch::zeros_like(x), right = torch::zeros_like(x),
       left = torch::zeros_like(x);
  down.slice(2, 1).copy_(x.slice(2, 0, 7));
  up.slice(2, 0, 7).copy_(x.slice(2, 1));
  right.slice(3, 1).copy_(x.slice(3, 0, 7));
  left.slice(3, 0, 7).copy_(x.slice(3, 1));
  auto views = base.at("neg_log_p_z").clone();
  for (const auto& v : {down, up, right, left}) views += pae.scores(v).at("neg_log_p_z");
  EXPECT_TRUE(torch::allclose(s.at("neg_log_p_z_views"), views / 5));
  // Complexity: the data likelihood in bits less the image's PNG size.
  const auto bits = torch::tensor(metrics::png_complexity_bits(x), torch::kFloat64);
  EXPECT_TRUE(torch::allclose(s.at("neg_log_p_x_complexity"), base.at("neg_log_p_x") / std::log(2.0) - bits));
  // A combination: the larger tail surprise of its two scores under the reference.
  const auto both = scorer.combined("tails:recon_mse+neg_log_p_z", s);
  const auto ref_all = scorer(reference);
  const auto to_vec = [](const at::Tensor& t) { return eval::to_doubles(t); };
  const auto by_hand = metrics::either_tail(to_vec(ref_all.at("recon_mse")), to_vec(s.at("recon_mse")),
                                            to_vec(ref_all.at("neg_log_p_z")), to_vec(s.at("neg_log_p_z")));
  EXPECT_EQ(to_vec(both), by_hand);
  EXPECT_NE(error_of([&] { scorer.combined("tails:recon_mse+nope", s); }).find("no score 'nope'"), std::string::npos);
}

TEST(Eval, OodScoreIsChosenOnValidationTransformsAndNoReportedSetChangesTheChoice) {
  TinyPae tiny;
  auto& [tmp, c, ro, fo, pae] = tiny;
  eval::OodOptions a;
  a.ood = {"noise"};
  a.select_on = {"vflip", "invert", "blur"};
  a.limit = 20;
  a.scores = {"recon_mse", "neg_log_p_z", "neg_log_p_x", "latent_norm"};
  auto b = a;
  b.ood = {"constant", "npy:" + tmp.file("x_train.npy")};
  const auto ra = eval::run_ood(pae, a), rb = eval::run_ood(pae, b);
  // The same choice, candidates and threshold whatever the reported sets; no reported set among the
  // validation sets.
  ASSERT_FALSE(ra.choice.chosen.empty());
  EXPECT_EQ(ra.choice.chosen, rb.choice.chosen);
  EXPECT_EQ(ra.choice.threshold, rb.choice.threshold);
  ASSERT_EQ(ra.choice.candidates.size(), 4u + 6u);  // 4 scores and their 6 pairs
  for (size_t i = 0; i < ra.choice.candidates.size(); ++i) {
    EXPECT_EQ(ra.choice.candidates[i].score, rb.choice.candidates[i].score);
    EXPECT_EQ(ra.choice.candidates[i].auroc, rb.choice.candidates[i].auroc);
    std::set<std::string> sets;
    for (const auto& [set, auc] : ra.choice.candidates[i].auroc) sets.insert(set);
    EXPECT_EQ(sets, (std::set<std::string>{"vflip", "invert", "blur"}));
  }
  EXPECT_EQ(ra.validation_in, "npy:val[8:16] (8 images)");
  // Best first by mean AUROC, each mean the average of its sets.
  for (size_t i = 0; i < ra.choice.candidates.size(); ++i) {
    const auto& cand = ra.choice.candidates[i];
    double mean = 0;
    for (const auto& [set, auc] : cand.auroc) mean += auc / 3;
    EXPECT_NEAR(cand.mean, mean, 1e-12);
    if (i > 0) EXPECT_LE(cand.mean, ra.choice.candidates[i - 1].mean);
  }
  // A candidate's AUROC by hand: the second half of the validation split against its inversion.
  const auto held = eval::load_set("npy:val", pae.config(), {1, 8, 8}).images.slice(0, 8);
  for (const auto& cand : ra.choice.candidates)
    if (cand.score == "recon_mse")
      EXPECT_DOUBLE_EQ(cand.auroc.at("invert"),
                       metrics::roc_auc(eval::to_doubles(pae.scores(held).at("recon_mse")),
                                        eval::to_doubles(pae.scores(1 - held).at("recon_mse"))));
  // The threshold flags at most 5% of the validation images (here: none of 8), and the report says how
  // many of each reported set it flags.
  const eval::OodScorer scorer(pae, eval::load_set("npy:val", pae.config(), {1, 8, 8}).images.slice(0, 0, 8), "ref");
  const auto s = scorer(held);
  const auto chosen =
      eval::OodScorer::is_combination(ra.choice.chosen) ? scorer.combined(ra.choice.chosen, s) : s.at(ra.choice.chosen);
  EXPECT_EQ((chosen > ra.choice.threshold).sum().item<int64_t>(), 0);
  EXPECT_EQ(ra.choice.threshold, chosen.max().item<double>());
  const auto in_test = ra.scores.at("npy:test").at(ra.choice.chosen);
  EXPECT_DOUBLE_EQ(ra.flagged.at("npy:test"),
                   (in_test > ra.choice.threshold).to(torch::kFloat64).mean().item<double>());
  EXPECT_TRUE(ra.flagged.count("noise"));
  // Written: ood.json's selection and ood.md's section.
  ra.write(pae, tmp.file("sel"));
  const auto json = nlohmann::json::parse(read_text(tmp.file("sel/ood.json")));
  EXPECT_EQ(json["selection"]["chosen"].get<std::string>(), ra.choice.chosen);
  EXPECT_FALSE(json["selection"]["reported_sets_used"].get<bool>());
  EXPECT_NE(read_text(tmp.file("sel/ood.md")).find("Chosen: **" + ra.choice.chosen + "**"), std::string::npos);
  // Unknown transforms and vectors are refused.
  a.select_on = {"sideways"};
  EXPECT_NE(error_of([&] { eval::run_ood(pae, a); }).find("unknown validation transform 'sideways'"),
            std::string::npos);
}
