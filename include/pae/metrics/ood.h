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

/// Upper-tail surprise of each value under a reference sample: -log((#{ref >= v} + 1) / (n + 1)),
/// the +1-smoothed empirical p-value of "at least this large" (0 for a value below every
/// reference value, log(n + 1) beyond the largest).
std::vector<double> tail_surprise(const std::vector<double>& reference, const std::vector<double>& values);

/// The OoD score that flags what either of two scores finds atypical: -log of the smaller of the
/// two tail probabilities, max(tail_surprise(ref_a, a), tail_surprise(ref_b, b)) per sample.
/// Not a likelihood: a test that combines two (the PAE's latent and residual terms).
std::vector<double> either_tail(const std::vector<double>& ref_a, const std::vector<double>& a,
                                const std::vector<double>& ref_b, const std::vector<double>& b);

/// The ROC curve as a standalone SVG (one curve per entry, with its label).
struct RocSeries {
  std::string label;
  std::vector<RocPoint> points;
};
std::string roc_svg(const std::vector<RocSeries>& series, const std::string& title);

}  // namespace pae::metrics
