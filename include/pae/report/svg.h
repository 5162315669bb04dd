// Plots as self-contained SVG text: line plots with axes, ticks (linear or log), a legend and
// optional vertical markers. The one plotting module of pae (ROC curves, training curves,
// score histograms in the HTML run report).
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace pae::report {

struct Series {
  std::string name;
  std::vector<double> x, y;  ///< same length; non-finite points break the line
  bool steps = false;        ///< draw as a step function (histograms)
};

struct PlotOptions {
  std::string title, x_label, y_label;
  bool log_y = false;  ///< falls back to linear when a finite y is <= 0
  int width = 520, height = 300;
  /// Fixed axis ranges (both ends given) instead of the data's.
  std::pair<double, double> x_range{0, 0}, y_range{0, 0};
  std::vector<std::pair<double, std::string>> markers;  ///< dashed vertical lines at x, labelled
  bool diagonal = false;                                ///< the y = x line (ROC chance level)
};

/// "Nice" tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);
/// Powers of ten covering [lo, hi] (lo > 0); at least two.
std::vector<double> log_ticks(double lo, double hi);
/// A tick value as a short label ("0.2", "1e-04", "2000").
std::string tick_label(double v);

std::string xml_escape(const std::string& text);

/// The plot as an <svg> element.
std::string line_plot(const std::vector<Series>& series, const PlotOptions& options);

}  // namespace pae::report
