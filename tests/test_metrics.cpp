// Evaluation metrics from first principles: brute-force counts, closed forms, an independent
// general-eigenvalue reference.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>
#include <random>

#include "pae/eval/features.h"
#include "pae/metrics/complexity.h"
#include "pae/metrics/fid.h"
#include "pae/metrics/ood.h"
#include "pae/metrics/parzen.h"
#include "pae/util/error.h"
#include "test_util.h"

using namespace pae::metrics;
using namespace pae::eval;

namespace {

std::vector<double> rounded_normals(int64_t n, double shift, std::mt19937_64& rng) {
  // Rounded to one decimal: many ties, within and across the two sets.
  std::normal_distribution<double> g(shift, 1.0);
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(std::round(g(rng) * 10) / 10);
  return v;
}

}  // namespace

TEST(Ood, AucEqualsPairwiseCountWithTies) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 5; ++trial) {
    auto in = rounded_normals(300 + trial * 17, 0.0, rng), out = rounded_normals(200 + trial * 31, 0.7, rng);
    double count = 0;
    for (double o : out)
      for (double i : in) count += o > i ? 1.0 : (o == i ? 0.5 : 0.0);
    EXPECT_NEAR(roc_auc(in, out), count / double(in.size() * out.size()), 1e-12);
    // The ROC curve's trapezoid area is the same statistic.
    const auto roc = roc_curve(in, out);
    double area = 0;
    for (size_t k = 1; k < roc.size(); ++k) area += (roc[k].fpr - roc[k - 1].fpr) * (roc[k].tpr + roc[k - 1].tpr) / 2;
    EXPECT_NEAR(area, roc_auc(in, out), 1e-12);
    EXPECT_DOUBLE_EQ(roc.back().fpr, 1.0);
    EXPECT_DOUBLE_EQ(roc.back().tpr, 1.0);
  }
}

TEST(Ood, PerfectSeparationAndIdenticalScores) {
  std::vector<double> in = {0.1, 0.2, 0.3}, out = {0.5, 0.9};
  EXPECT_DOUBLE_EQ(roc_auc(in, out), 1.0);
  EXPECT_DOUBLE_EQ(roc_auc(out, in), 0.0);
  EXPECT_DOUBLE_EQ(average_precision(in, out), 1.0);
  EXPECT_DOUBLE_EQ(fpr_at_tpr(in, out), 0.0);
  std::vector<double> same(50, 1.0), same2(20, 1.0);
  EXPECT_DOUBLE_EQ(roc_auc(same, same2), 0.5);
  EXPECT_DOUBLE_EQ(average_precision(same, same2), 20.0 / 70.0);  // one threshold: the base rate
  EXPECT_DOUBLE_EQ(fpr_at_tpr(same, same2), 1.0);
  EXPECT_THROW(roc_auc({}, out), pae::Error);
  EXPECT_THROW(roc_auc(in, {std::nan("")}), pae::Error);
}

TEST(Ood, TailSurpriseAndEitherTailByHand) {
  // Reference {1, 2, 2, 3}: P(ref >= v) +1-smoothed over n + 1 = 5.
  const std::vector<double> ref = {3, 2, 1, 2};
  const auto t = tail_surprise(ref, {0.5, 1, 2, 2.5, 3, 10});
  const std::vector<double> expected = {-std::log(5 / 5.), -std::log(5 / 5.), -std::log(4 / 5.),
                                        -std::log(2 / 5.), -std::log(2 / 5.), -std::log(1 / 5.)};
  for (size_t i = 0; i < t.size(); ++i) EXPECT_NEAR(t[i], expected[i], 1e-12) << i;
  // Either: the larger surprise of the two terms, whichever term it comes from.
  const std::vector<double> ref_b = {10, 20, 30, 40};
  const auto e = either_tail(ref, {10, 0}, ref_b, {0, 35});
  EXPECT_NEAR(e[0], std::log(5.0), 1e-12);      // a beyond every reference value, b typical
  EXPECT_NEAR(e[1], -std::log(2 / 5.), 1e-12);  // b in the top two, a typical
  EXPECT_THROW(either_tail(ref, {1, 2}, ref_b, {1}), pae::Error);
  EXPECT_THROW(tail_surprise(ref, {std::nan("")}), pae::Error);
}

TEST(Ood, AveragePrecisionAndFprByHand) {
  // Descending: 0.9(o) 0.8(i) 0.7(o) 0.6(i) 0.5(o): AP = 1/3 (1 + 2/3 + 3/5).
  std::vector<double> in = {0.8, 0.6}, out = {0.9, 0.7, 0.5};
  EXPECT_NEAR(average_precision(in, out), (1.0 + 2.0 / 3 + 3.0 / 5) / 3, 1e-12);
  EXPECT_DOUBLE_EQ(fpr_at_tpr(in, out, 0.6), 0.5);  // TPR 2/3 first reached after one in-sample
  EXPECT_DOUBLE_EQ(fpr_at_tpr(in, out, 0.95), 1.0);
}

TEST(Fid, ClosedFormsAndBruteForceReference) {
  torch::manual_seed(11);
  const int64_t f = 12;
  // Equal covariances: FID = ||mu1 - mu2||^2.
  auto a = torch::randn({f, 5}, torch::kFloat64);
  GaussianStats s1{torch::randn({f}, torch::kFloat64), torch::matmul(a, a.t()), 100};
  GaussianStats s2{torch::randn({f}, torch::kFloat64), s1.cov.clone(), 100};
  EXPECT_NEAR(frechet_distance(s1, s2), (s1.mean - s2.mean).pow(2).sum().item<double>(), 1e-9);
  // Identical sets: 0 (also from features, with fewer samples than dimensions: singular).
  auto feats = torch::randn({8, f}, torch::kFloat64);
  auto st = gaussian_stats(feats);
  EXPECT_NEAR(frechet_distance(st, st), 0.0, 1e-9);
  // Random low-rank covariances against Tr sqrt(S1 S2) from the general (complex) eigenvalues.
  for (int64_t rank : {1, 3, 7}) {
    auto b1 = torch::randn({f, rank}, torch::kFloat64), b2 = torch::randn({f, rank + 2}, torch::kFloat64);
    GaussianStats g1{torch::randn({f}, torch::kFloat64), torch::matmul(b1, b1.t()), 50};
    GaussianStats g2{torch::randn({f}, torch::kFloat64), torch::matmul(b2, b2.t()), 50};
    auto ev = torch::linalg::eigvals(torch::matmul(g1.cov, g2.cov));
    const double tr_sqrt = torch::real(ev).clamp_min(0).sqrt().sum().item<double>();
    const double expected = (g1.mean - g2.mean).pow(2).sum().item<double>() + g1.cov.trace().item<double>() +
                            g2.cov.trace().item<double>() - 2 * tr_sqrt;
    EXPECT_NEAR(frechet_distance(g1, g2), expected, 1e-6 * std::abs(expected)) << "rank " << rank;
    // Its parts: the mean term alone, the rest from the covariances, spread = ratio of traces.
    const auto parts = frechet_parts(g1, g2);
    EXPECT_NEAR(parts.mean_term, (g1.mean - g2.mean).pow(2).sum().item<double>(), 1e-12 * parts.mean_term);
    EXPECT_NEAR(parts.cov_term, expected - parts.mean_term, 1e-6 * std::abs(expected));
    EXPECT_NEAR(parts.spread, g1.cov.trace().item<double>() / g2.cov.trace().item<double>(), 1e-12);
  }
  EXPECT_THROW(gaussian_stats(feats, 100), pae::Error);
  EXPECT_THROW(gaussian_stats(torch::randn({1, f})), pae::Error);
}

TEST(Parzen, OneCentreIsTheGaussianAndBlocksAgree) {
  torch::manual_seed(12);
  auto c = torch::randn({1, 6}, torch::kFloat64), x = torch::randn({30, 6}, torch::kFloat64);
  const double sigma = 0.7;
  auto expected = -(x - c).pow(2).sum(1) / (2 * sigma * sigma) - 3.0 * std::log(2 * M_PI * sigma * sigma);
  EXPECT_LT((parzen_log_prob(c, x, sigma) - expected).abs().max().item<double>(), 1e-10);
  // Many centres: blocked log-sum-exp equals the direct mixture density, far from the centres too.
  auto cs = torch::randn({50, 6}, torch::kFloat64), far = torch::randn({9, 6}, torch::kFloat64) * 30;
  auto direct = torch::logsumexp(-(far.unsqueeze(1) - cs.unsqueeze(0)).pow(2).sum(2) / (2 * sigma * sigma), 1) -
                std::log(50.0) - 3.0 * std::log(2 * M_PI * sigma * sigma);
  EXPECT_LT((parzen_log_prob(cs, far, sigma, 7) - direct).abs().max().item<double>(), 1e-8);
  // Sigma selection picks the grid value with the best validation likelihood.
  auto grid = log_grid(0.05, 5, 9);
  auto r = parzen_evaluate(cs, torch::randn({40, 6}, torch::kFloat64), x, grid);
  double best = -1e300;
  for (auto& [s, v] : r.validation) best = std::max(best, v);
  for (auto& [s, v] : r.validation)
    if (v == best) EXPECT_DOUBLE_EQ(s, r.sigma);
  EXPECT_GT(r.std_error, 0.0);
}

TEST(Inception, RandomWeightsFileGives2048dFeatures) {
  // pytorch-fid's network minus torchvision's aux head and fc: 27,161,264 - 3,326,696 - 2,049,000
  // trainable values; two spot-checked names and shapes from its state dict.
  const auto shapes = inception_v3_tensor_shapes();
  int64_t params = 0;
  std::map<std::string, std::vector<int64_t>> by_name;
  for (const auto& [name, shape] : shapes) {
    by_name[name] = shape;
    if (name.find("running_") == std::string::npos) {
      int64_t n = 1;
      for (auto s : shape) n *= s;
      params += n;
    }
  }
  EXPECT_EQ(params, 21785568);
  EXPECT_EQ(by_name["Conv2d_1a_3x3.conv.weight"], (std::vector<int64_t>{32, 3, 3, 3}));
  EXPECT_EQ(by_name["Mixed_7c.branch_pool.conv.weight"], (std::vector<int64_t>{192, 2048, 1, 1}));
  EXPECT_EQ(by_name["Mixed_6e.branch7x7dbl_5.conv.weight"], (std::vector<int64_t>{192, 192, 1, 7}));

  pae::testing::TempDir tmp;
  torch::manual_seed(13);
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, shape] : shapes) {
    auto t = name.find("running_var") != std::string::npos ? torch::rand(shape) + 0.5 : torch::randn(shape) * 0.05;
    dict.insert(name, t);
  }
  dict.insert("fc.weight", torch::randn({1008, 2048}));  // extra tensors are ignored
  {
    auto bytes = torch::pickle_save(dict);
    std::ofstream(tmp.file("inception.pth"), std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  }
  for (auto protocol : {InceptionProtocol::kPlain, InceptionProtocol::kPerImageMinMax}) {
    auto net = inception_v3(tmp.file("inception.pth"), protocol, 2);
    auto f = net->features(torch::rand({3, 1, 28, 28}));
    EXPECT_EQ(f.sizes(), (std::vector<int64_t>{3, 2048}));
    EXPECT_TRUE(torch::isfinite(f).all().item<bool>());
    EXPECT_GT(f.std().item<double>(), 0.0);
  }
  // A missing file, a file that is not a dict, a mis-shaped tensor: one clear error each.
  EXPECT_NE(
      pae::testing::error_of([&] { inception_v3(tmp.file("none.pth"), InceptionProtocol::kPlain); }).find("none.pth"),
      std::string::npos);
  std::ofstream(tmp.file("junk.pth")) << "not a pickle";
  EXPECT_NE(
      pae::testing::error_of([&] { inception_v3(tmp.file("junk.pth"), InceptionProtocol::kPlain); }).find("junk.pth"),
      std::string::npos);
  dict.insert_or_assign("Conv2d_1a_3x3.conv.weight", torch::randn({32, 3, 5, 5}));
  auto bytes = torch::pickle_save(dict);
  std::ofstream(tmp.file("bad.pth"), std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  EXPECT_NE(pae::testing::error_of([&] {
              inception_v3(tmp.file("bad.pth"), InceptionProtocol::kPlain);
            }).find("Conv2d_1a_3x3.conv.weight"),
            std::string::npos);
}

TEST(Ood, PngComplexityIsSmallForRegularImagesAndAboutTheRawSizeForNoise) {
  torch::manual_seed(0);
  const auto noise = torch::randint(0, 256, {1, 1, 16, 16}).to(torch::kFloat32) / 255;
  const auto flat = torch::full({1, 1, 16, 16}, 0.5);
  // A ramp along each row: the sub filter turns every row into (first value, 1, 1, ...).
  const auto ramp = (torch::arange(16).to(torch::kFloat32) / 255).expand({1, 1, 16, 16}).contiguous();
  const auto bits = pae::metrics::png_complexity_bits(torch::cat({noise, flat, ramp}));
  // Noise does not compress: 16 rows x (1 filter byte + 16 pixels), plus zlib's and deflate's few bytes.
  EXPECT_GE(bits[0], 8.0 * 16 * 17);
  EXPECT_LE(bits[0], 8.0 * (16 * 17 + 16));
  EXPECT_LT(bits[1], 8.0 * 20);
  EXPECT_LT(bits[2], 8.0 * 25);
  EXPECT_LT(bits[1], bits[2]);
  // Only the 8-bit values count: a change below half a level does not change L(x).
  EXPECT_EQ(pae::metrics::png_complexity_bits(noise + 0.4 / 255 * (noise < 0.99).to(torch::kFloat32)).at(0), bits[0]);
}
