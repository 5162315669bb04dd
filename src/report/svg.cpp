#include "pae/report/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace pae::report {

namespace {
const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}
}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(1, target);
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  double step = p;
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * p * 1.0000001) {
      step = m * p;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step)
    out.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return out;
}

std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> out;
  const int a = int(std::floor(std::log10(lo) + 1e-9)), b = int(std::ceil(std::log10(hi) - 1e-9));
  for (int e = a; e <= std::max(b, a + 1); ++e) out.push_back(std::pow(10.0, e));
  return out;
}

std::string tick_label(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);  // 0.00095, 1e-05, 2000, 1.5e+06
  return b;
}

std::string xml_escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string line_plot(const std::vector<Series>& series, const PlotOptions& o) {
  // Data ranges over finite points (positive y only when log).
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  bool log_y = o.log_y;
  for (const auto& s : series)
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
        x_lo = std::min(x_lo, s.x[i]);
        x_hi = std::max(x_hi, s.x[i]);
        y_lo = std::min(y_lo, s.y[i]);
        y_hi = std::max(y_hi, s.y[i]);
        if (s.y[i] <= 0) log_y = false;
      }
  if (o.x_range.first < o.x_range.second) std::tie(x_lo, x_hi) = o.x_range;
  if (o.y_range.first < o.y_range.second) std::tie(y_lo, y_hi) = o.y_range;
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;  // nothing to draw
  if (x_hi <= x_lo) x_lo -= 0.5, x_hi += 0.5;
  if (y_hi <= y_lo) {
    const double pad = y_lo != 0 ? std::abs(y_lo) * 0.1 : 0.5;
    y_lo -= pad, y_hi += pad;
    if (log_y && y_lo <= 0) log_y = false;
  }
  std::vector<double> y_ticks = log_y ? log_ticks(y_lo, y_hi) : nice_ticks(y_lo, y_hi);
  if (log_y) y_lo = std::min(y_lo, y_ticks.front()), y_hi = std::max(y_hi, y_ticks.back());
  const auto x_ticks = nice_ticks(x_lo, x_hi, 6);

  const double left = 64, right = 150, top = 28, bottom = 44;
  const double pw = o.width - left - right, ph = o.height - top - bottom;
  const auto px = [&](double x) { return left + (x - x_lo) / (x_hi - x_lo) * pw; };
  const auto py = [&](double y) {
    const double f =
        log_y ? (std::log10(y) - std::log10(y_lo)) / (std::log10(y_hi) - std::log10(y_lo)) : (y - y_lo) / (y_hi - y_lo);
    return top + (1 - f) * ph;
  };
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(o.width) + "\" height=\"" +
                  std::to_string(o.height) + "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + num(left) + "\" y=\"16\" font-size=\"13\">" + xml_escape(o.title) + "</text>\n";
  for (const double t : y_ticks) {
    if (t < y_lo - 1e-12 * std::abs(y_lo) || t > y_hi + 1e-12 * std::abs(y_hi)) continue;
    s += "<line class=\"grid\" x1=\"" + num(left) + "\" x2=\"" + num(left + pw) + "\" y1=\"" + num(py(t)) + "\" y2=\"" +
         num(py(t)) + "\" stroke=\"#e5e5e5\"/>\n";
    s += "<text class=\"ytick\" x=\"" + num(left - 4) + "\" y=\"" + num(py(t) + 4) + "\" text-anchor=\"end\">" +
         tick_label(t) + "</text>\n";
  }
  for (const double t : x_ticks)
    s += "<text class=\"xtick\" x=\"" + num(px(t)) + "\" y=\"" + num(top + ph + 14) + "\" text-anchor=\"middle\">" +
         tick_label(t) + "</text>\n";
  s += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(pw) + "\" height=\"" + num(ph) +
       "\" fill=\"none\" stroke=\"#333\"/>\n";
  s += "<text x=\"" + num(left + pw / 2) + "\" y=\"" + num(o.height - 8) + "\" text-anchor=\"middle\">" +
       xml_escape(o.x_label) + "</text>\n";
  s += "<text x=\"12\" y=\"" + num(top + ph / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 12 " +
       num(top + ph / 2) + ")\">" + xml_escape(o.y_label) + (log_y ? " (log)" : "") + "</text>\n";
  if (o.diagonal)
    s += "<line x1=\"" + num(px(x_lo)) + "\" y1=\"" + num(py(y_lo)) + "\" x2=\"" + num(px(x_hi)) + "\" y2=\"" +
         num(py(y_hi)) + "\" stroke=\"#bbb\" stroke-dasharray=\"4\"/>\n";
  for (const auto& [x, label] : o.markers) {
    if (x < x_lo || x > x_hi) continue;
    s += "<line x1=\"" + num(px(x)) + "\" x2=\"" + num(px(x)) + "\" y1=\"" + num(top) + "\" y2=\"" + num(top + ph) +
         "\" stroke=\"#999\" stroke-dasharray=\"3 3\"/>\n<text x=\"" + num(px(x) + 3) + "\" y=\"" + num(top + 10) +
         "\" fill=\"#666\">" + xml_escape(label) + "</text>\n";
  }
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& se = series[k];
    const char* colour = kColours[k % 8];
    std::string d;
    bool pen = false;
    double last_y = 0;
    // At most ~2000 vertices a line: enough to draw, small to open.
    const size_t n = std::min(se.x.size(), se.y.size()), stride = std::max<size_t>(1, n / 2000);
    for (size_t i = 0; i < n; i += (i + stride < n || i == n - 1) ? stride : n - 1 - i) {
      const double x = se.x[i], y = se.y[i];
      if (!std::isfinite(x) || !std::isfinite(y) || (log_y && y <= 0)) {
        pen = false;
        if (i == n - 1) break;
        continue;
      }
      const double cx = px(std::clamp(x, x_lo, x_hi)), cy = py(std::clamp(y, y_lo, y_hi));
      if (pen && se.steps) d += "L" + num(cx) + "," + num(last_y);
      d += (pen ? "L" : "M") + num(cx) + "," + num(cy);
      last_y = cy;
      pen = true;
      if (i == n - 1) break;
    }
    s += std::string("<path class=\"series\" fill=\"none\" stroke-width=\"1.6\" stroke=\"") + colour + "\" d=\"" + d +
         "\"/>\n";
    s += "<line x1=\"" + num(left + pw + 10) + "\" x2=\"" + num(left + pw + 26) + "\" y1=\"" + num(top + 8 + 16 * k) +
         "\" y2=\"" + num(top + 8 + 16 * k) + "\" stroke=\"" + colour + "\" stroke-width=\"2\"/>\n";
    s += "<text class=\"legend\" x=\"" + num(left + pw + 30) + "\" y=\"" + num(top + 12 + 16 * k) + "\">" +
         xml_escape(se.name) + "</text>\n";
  }
  return s + "</svg>\n";
}

}  // namespace pae::report
