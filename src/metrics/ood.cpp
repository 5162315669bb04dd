#include "pae/metrics/ood.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

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

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

}  // namespace

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
  const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
  const double x0 = 50, y0 = 30, size = 360;
  std::string s =
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"620\" height=\"440\" font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"620\" height=\"440\" fill=\"white\"/>\n";
  char buf[512];
  std::snprintf(
      buf, sizeof(buf),
      "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"black\"/>\n"
      "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#bbb\" stroke-dasharray=\"4\"/>\n"
      "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">false-positive rate</text>\n"
      "<text x=\"15\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 15 %g)\">true-positive rate</text>\n",
      x0, y0, size, size, x0, y0 + size, x0 + size, y0, x0 + size / 2, y0 + size + 30, y0 + size / 2, y0 + size / 2);
  s += buf;
  s += "<text x=\"" + std::to_string(x0) + "\" y=\"20\">" + xml_escape(title) + "</text>\n";
  for (size_t k = 0; k < series.size(); ++k) {
    s += std::string("<polyline fill=\"none\" stroke-width=\"1.5\" stroke=\"") + colours[k % 8] + "\" points=\"";
    // At most ~2000 vertices per curve: enough to draw, small to open.
    const size_t step = std::max<size_t>(1, series[k].points.size() / 2000);
    for (size_t i = 0; i < series[k].points.size(); i += step) {
      const auto& p = series[k].points[i];
      std::snprintf(buf, sizeof(buf), "%.2f,%.2f ", x0 + p.fpr * size, y0 + (1 - p.tpr) * size);
      s += buf;
    }
    s += std::to_string(x0 + size) + "," + std::to_string(y0) + "\"/>\n";
    std::snprintf(buf, sizeof(buf), "<text x=\"%g\" y=\"%g\" fill=\"%s\">%s</text>\n", x0 + size + 15,
                  y0 + 15 + 18 * double(k), colours[k % 8], xml_escape(series[k].label).c_str());
    s += buf;
  }
  return s + "</svg>\n";
}

}  // namespace pae::metrics
