#include "pae/metrics/ood.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include "pae/report/svg.h"
#include "pae/util/error.h"

namespace pae::metrics {

namespace {

/// (score, is_ood) pairs sorted by score, descending; checks sizes and NaN.
std::vector<std::pair<double, bool>> labelled(const std::vector<double>& in, const std::vector<double>& out) {
  require(!in.empty() && !out.empty(), "OoD metrics need scores of both sets (got " + std::to_string(in.size()) +
                                           " in-distribution and " + std::to_string(out.size()) + " OoD)");
  std::vector<std::pair<double, bool>> v;
  v.reserve(in.size() + out.size());
  for (double s : in) v.emplace_back(s, false);
  for (double s : out) v.emplace_back(s, true);
  for (const auto& p : v) require(!std::isnan(p.first), "OoD metrics: a score is NaN");
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return v;
}

}  // namespace

std::vector<double> tail_surprise(const std::vector<double>& reference, const std::vector<double>& values) {
  std::vector<double> ref = reference;
  for (double v : ref) require(!std::isnan(v), "tail_surprise: NaN in the reference scores");
  std::sort(ref.begin(), ref.end());
  const double n = double(ref.size());
  std::vector<double> out;
  out.reserve(values.size());
  for (double v : values) {
    require(!std::isnan(v), "tail_surprise: NaN score");
    const double at_least = double(ref.end() - std::lower_bound(ref.begin(), ref.end(), v));
    out.push_back(-std::log((at_least + 1) / (n + 1)));
  }
  return out;
}

std::vector<double> either_tail(const std::vector<double>& ref_a, const std::vector<double>& a,
                                const std::vector<double>& ref_b, const std::vector<double>& b) {
  require(a.size() == b.size(), "either_tail: the two scores cover different samples");
  auto ta = tail_surprise(ref_a, a);
  const auto tb = tail_surprise(ref_b, b);
  for (size_t i = 0; i < ta.size(); ++i) ta[i] = std::max(ta[i], tb[i]);
  return ta;
}

double roc_auc(const std::vector<double>& in, const std::vector<double>& out) {
  const auto v = labelled(in, out);
  // Mid-ranks in ascending order (rank 1 = lowest score); ties share their average rank.
  const size_t n = v.size();
  double rank_sum = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && v[j].first == v[i].first) ++j;
    // Descending positions i..j-1 are ascending ranks n-j+1 .. n-i.
    const double mid = (double(n - j + 1) + double(n - i)) / 2;
    for (size_t t = i; t < j; ++t)
      if (v[t].second) rank_sum += mid;
    i = j;
  }
  const double n_out = double(out.size()), n_in = double(in.size());
  return (rank_sum - n_out * (n_out + 1) / 2) / (n_out * n_in);
}

std::vector<RocPoint> roc_curve(const std::vector<double>& in, const std::vector<double>& out) {
  const auto v = labelled(in, out);
  std::vector<RocPoint> points{{0, 0, std::numeric_limits<double>::infinity()}};
  double tp = 0, fp = 0;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    for (; j < v.size() && v[j].first == v[i].first; ++j) (v[j].second ? tp : fp) += 1;
    points.push_back({fp / double(in.size()), tp / double(out.size()), v[i].first});
    i = j;
  }
  return points;
}

double average_precision(const std::vector<double>& in, const std::vector<double>& out) {
  const auto v = labelled(in, out);
  double tp = 0, fp = 0, ap = 0, last_recall = 0;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    for (; j < v.size() && v[j].first == v[i].first; ++j) (v[j].second ? tp : fp) += 1;
    const double recall = tp / double(out.size());
    ap += (recall - last_recall) * tp / (tp + fp);
    last_recall = recall;
    i = j;
  }
  return ap;
}

double fpr_at_tpr(const std::vector<double>& in, const std::vector<double>& out, double tpr) {
  double best = 1;
  for (const auto& p : roc_curve(in, out))
    if (p.tpr >= tpr) best = std::min(best, p.fpr);
  return best;
}

std::string roc_svg(const std::vector<RocSeries>& series, const std::string& title) {
  std::vector<report::Series> lines;
  for (const auto& r : series) {
    report::Series line{r.label, {}, {}};
    for (const auto& p : r.points) {
      line.x.push_back(p.fpr);
      line.y.push_back(p.tpr);
    }
    lines.push_back(std::move(line));
  }
  report::PlotOptions o;
  o.title = title;
  o.x_label = "false-positive rate";
  o.y_label = "true-positive rate";
  o.width = 620;
  o.height = 440;
  o.x_range = o.y_range = {0.0, 1.0};
  o.diagonal = true;
  return report::line_plot(lines, o);
}

}  // namespace pae::metrics
