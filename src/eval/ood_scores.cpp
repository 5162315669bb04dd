#include "pae/eval/ood_scores.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "pae/eval/evaluate.h"
#include "pae/eval/pae.h"
#include "pae/metrics/complexity.h"
#include "pae/metrics/ood.h"
#include "pae/util/error.h"
#include "pae/util/text.h"

namespace pae::eval {

namespace {

const char* const kDensities[] = {"neg_log_p_z", "neg_log_p_x", "nll"};
bool is_pixel_density(const std::string& d) { return d != "neg_log_p_z"; }

/// x shifted by one pixel along `dim` (2: rows, 3: columns) in direction `step` (+1 / -1), zeros shifted in.
at::Tensor shifted(const at::Tensor& x, int64_t dim, int64_t step) {
  auto out = torch::zeros_like(x);
  const int64_t n = x.size(dim);
  if (step > 0)
    out.narrow(dim, 1, n - 1).copy_(x.narrow(dim, 0, n - 1));
  else
    out.narrow(dim, 0, n - 1).copy_(x.narrow(dim, 1, n - 1));
  return out;
}

at::Tensor gaussian_blur(const at::Tensor& x, double sigma) {
  const int64_t radius = int64_t(std::ceil(3 * sigma));
  auto k = torch::arange(-radius, radius + 1, torch::kFloat32);
  k = (-k.pow(2) / (2 * sigma * sigma)).exp();
  k = k / k.sum();
  const int64_t c = x.size(1);
  const auto f = x.to(torch::kFloat32);
  const at::Tensor no_bias;
  const std::vector<int64_t> stride{1, 1}, dilation{1, 1}, pad_rows{radius, 0}, pad_columns{0, radius};
  auto rows = torch::conv2d(f, k.view({1, 1, -1, 1}).repeat({c, 1, 1, 1}), no_bias, stride, pad_rows, dilation, c);
  return torch::conv2d(rows, k.view({1, 1, 1, -1}).repeat({c, 1, 1, 1}), no_bias, stride, pad_columns, dilation, c);
}

at::Tensor pixel_shuffle(const at::Tensor& x) {
  auto gen = at::detail::createCPUGenerator(0);
  auto flat = x.flatten(1);
  auto out = torch::empty_like(flat);
  for (int64_t i = 0; i < flat.size(0); ++i)
    out[i] = flat[i].index_select(0, torch::randperm(flat.size(1), gen, torch::kLong));
  return out.view_as(x);
}

}  // namespace

OodScorer::OodScorer(Pae& pae, const at::Tensor& reference, std::string reference_name, bool views)
    : pae_(pae), views_(views), reference_name_(std::move(reference_name)) {
  auto s = pae_.scores(reference);
  // The reference's own typicality is not needed; its other scores are, for tail probabilities.
  reference_ = s;
  reference_ = with_derived(reference, std::move(s));
}

ScoreMap OodScorer::operator()(const at::Tensor& images) const { return with_derived(images, pae_.scores(images)); }

ScoreMap OodScorer::with_derived(const at::Tensor& images, ScoreMap s) const {
  std::vector<ScoreMap> views;
  if (views_ && images.size(2) > 1 && images.size(3) > 1)
    for (const auto& [dim, step] : {std::pair{2, 1}, {2, -1}, {3, 1}, {3, -1}})
      views.push_back(pae_.scores(shifted(images, dim, step)));
  std::vector<double> complexity;
  for (const std::string d : kDensities) {
    if (!s.count(d)) continue;
    const auto value = s.at(d);
    if (reference_.count(d)) s[d + "_typicality"] = (value - reference_.at(d).mean()).abs();
    if (!views.empty()) {
      auto sum = value.clone();
      for (const auto& v : views) sum += v.at(d);
      s[d + "_views"] = sum / double(views.size() + 1);
    }
    if (is_pixel_density(d)) {
      if (complexity.empty()) complexity = metrics::png_complexity_bits(images);
      s[d + "_complexity"] = value / std::log(2.0) - torch::tensor(complexity, torch::kFloat64);
    }
  }
  // either_tail: the two terms of the data likelihood, -log p(z) and the residual's NLL.
  if (s.count("neg_log_p_x") && reference_.count("neg_log_p_x")) {
    const auto residual = [](const ScoreMap& m) { return m.at("neg_log_p_x") - m.at("neg_log_p_z"); };
    s["either_tail"] =
        torch::tensor(metrics::either_tail(to_doubles(reference_.at("neg_log_p_z")), to_doubles(s.at("neg_log_p_z")),
                                           to_doubles(residual(reference_)), to_doubles(residual(s))),
                      torch::kFloat64);
  }
  return s;
}

at::Tensor OodScorer::combined(const std::string& name, const ScoreMap& scores) const {
  require(is_combination(name), "not a combination of scores: " + name);
  const auto parts = split_list(name.substr(6), '+');
  require(parts.size() == 2, "a combination names two scores (tails:a+b), got " + name);
  for (const auto& p : parts)
    require(scores.count(p) && reference_.count(p), "combination " + name + ": no score '" + p + "'");
  return torch::tensor(metrics::either_tail(to_doubles(reference_.at(parts[0])), to_doubles(scores.at(parts[0])),
                                            to_doubles(reference_.at(parts[1])), to_doubles(scores.at(parts[1]))),
                       torch::kFloat64);
}

std::map<std::string, std::string> OodScorer::descriptions() {
  return {{"D_typicality", "|D - mean of D over the reference images| (Nalisnick et al. 2019, single images)"},
          {"D_views", "D averaged over the image and its four one-pixel shifts"},
          {"D_complexity",
           "D / ln 2 - L(x), L = bits of the image's PNG data stream (8-bit, per-row PNG filter, zlib level 9): "
           "Serra et al. 2020"},
          {"tails:a+b", "-log of the smaller upper-tail probability of scores a and b among the reference images"}};
}

const std::vector<ImageTransform>& validation_transforms() {
  static const std::vector<ImageTransform> all = {
      {"vflip", "upside down", [](const at::Tensor& x) { return x.flip({2}); }},
      {"rot90", "rotated by 90 degrees",
       [](const at::Tensor& x) {
         require(x.size(2) == x.size(3), "rot90 needs square images");
         return x.rot90(1, {2, 3});
       }},
      {"invert", "1 - x", [](const at::Tensor& x) { return 1 - x; }},
      {"jigsaw", "quadrants swapped (rolled by half the height and width)",
       [](const at::Tensor& x) {
         return x.roll({x.size(2) / 2, x.size(3) / 2}, {2, 3});
       }},
      {"blur", "Gaussian blur, sigma 1.5 pixels", [](const at::Tensor& x) { return gaussian_blur(x, 1.5); }},
      {"mix", "mean of each image and the next one", [](const at::Tensor& x) { return (x + x.roll(1, 0)) / 2; }},
      {"pixel-shuffle", "pixels of each image in a random order (seed 0)", pixel_shuffle},
  };
  return all;
}

std::vector<std::string> default_validation_transforms() {
  std::vector<std::string> names;
  for (const auto& t : validation_transforms())
    if (t.name != "pixel-shuffle") names.push_back(t.name);
  return names;
}

const ImageTransform& validation_transform(const std::string& name) {
  std::vector<std::string> names;
  for (const auto& t : validation_transforms()) {
    if (t.name == name) return t;
    names.push_back(t.name);
  }
  throw Error("--select-on: unknown validation transform '" + name + "' (expected all or " + joined(names) + ")");
}

ScoreChoice choose_score(const OodScorer& scorer, const ScoreMap& in, const std::map<std::string, ScoreMap>& out,
                         double fpr) {
  require(!out.empty(), "choosing a score needs at least one validation set");
  require(fpr > 0 && fpr < 1, "the threshold's false-positive rate must be in (0, 1)");
  std::vector<std::string> names;
  for (const auto& [name, s] : in) names.push_back(name);
  const size_t singles = names.size();
  for (size_t i = 0; i < singles; ++i)
    for (size_t j = i + 1; j < singles; ++j) names.push_back(OodScorer::combination(names[i], names[j]));
  const auto value = [&](const ScoreMap& m, const std::string& name) {
    return OodScorer::is_combination(name) ? scorer.combined(name, m) : m.at(name);
  };
  ScoreChoice choice;
  choice.fpr = fpr;
  for (const auto& name : names) {
    ScoreChoice::Candidate c{name, {}, 0, 1};
    const auto a = to_doubles(value(in, name));
    for (const auto& [set, scores] : out) {
      const double auc = metrics::roc_auc(a, to_doubles(value(scores, name)));
      c.auroc[set] = auc;
      c.mean += auc / double(out.size());
      c.min = std::min(c.min, auc);
    }
    choice.candidates.push_back(c);
  }
  std::sort(choice.candidates.begin(), choice.candidates.end(), [](const auto& a, const auto& b) {
    if (a.mean != b.mean) return a.mean > b.mean;
    if (a.min != b.min) return a.min > b.min;
    return a.score < b.score;
  });
  choice.chosen = choice.candidates.front().score;
  // The threshold: the smallest value that flags at most `fpr` of the in-distribution images.
  auto v = to_doubles(value(in, choice.chosen));
  std::sort(v.begin(), v.end());
  const auto keep = size_t(std::ceil((1 - fpr) * double(v.size())));
  choice.threshold = v[std::min(v.size(), std::max<size_t>(keep, 1)) - 1];
  return choice;
}

}  // namespace pae::eval
