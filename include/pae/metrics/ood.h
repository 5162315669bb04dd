// Out-of-distribution detection metrics: in-distribution samples are the negatives, OoD
// samples the positives, and a higher score means "more anomalous".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pae::metrics {

/// ROC AUC = P(s_out > s_in) + P(s_out = s_in) / 2: the Mann-Whitney U statistic divided by
/// n_in * n_out, computed exactly from mid-ranks (ties count one half). NaN scores are an error.
double roc_auc(const std::vector<double>& in_scores, const std::vector<double>& out_scores);

/// Average precision with OoD as the positive class: sum over distinct thresholds of
/// (recall step) x precision, ties forming one threshold (scikit-learn's definition).
double average_precision(const std::vector<double>& in_scores, const std::vector<double>& out_scores);

/// One point of the ROC curve per distinct threshold, from (0, 0) to (1, 1).
struct RocPoint {
  double fpr, tpr, threshold;
};
std::vector<RocPoint> roc_curve(const std::vector<double>& in_scores, const std::vector<double>& out_scores);

/// Smallest false-positive rate (in-distribution flagged) among thresholds whose true-positive
/// rate (OoD flagged) is at least `tpr` (default 95%).
double fpr_at_tpr(const std::vector<double>& in_scores, const std::vector<double>& out_scores, double tpr = 0.95);

/// The ROC curve as a standalone SVG (one curve per entry, with its label).
struct RocSeries {
  std::string label;
  std::vector<RocPoint> points;
};
std::string roc_svg(const std::vector<RocSeries>& series, const std::string& title);

}  // namespace pae::metrics
