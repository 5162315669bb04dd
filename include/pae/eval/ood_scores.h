// OoD scores beyond the models' own (Pae::scores), and the protocol that chooses among them on
// validation sets made from in-distribution images, never on the sets it reports.
//
// Scores that need held-out in-distribution images (tail probabilities, typicality) take them from
// a reference set: the first half of the AE's validation split. The choice (pae-eval ood
// --select-on) is made on the other half and its transformations (validation_transforms), so the
// reference never scores itself.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace pae::eval {

class Pae;

using ScoreMap = std::map<std::string, at::Tensor>;  ///< score name -> [N] float64, higher = more anomalous

/// The bundle's scores (Pae::scores) plus those built from them. For each density score d among
/// neg_log_p_z (the flow's), neg_log_p_x (the PAE's data likelihood) and nll (the DNF's):
///   d_typicality   |d - mean of d over the reference|: the typicality test of Nalisnick et al.
///                  (2019) on single images (too likely is as suspect as too unlikely)
///   d_views        d averaged over the image and its four one-pixel shifts (zeros shifted in)
/// and for the pixel densities (neg_log_p_x, nll):
///   d_complexity   d / ln 2 - L(x), L = the PNG size of the image in bits (metrics/complexity.h):
///                  the complexity-corrected likelihood of Serrà et al. (2020)
/// and with a flow and a pixel sigma, either_tail (the larger tail surprise of -log p(z) and of the
/// residual's NLL). Pairwise combinations "tails:a+b" are made on request (combined()).
class OodScorer {
 public:
  /// `reference`: held-out in-distribution images, named `reference_name` in reports; `views`:
  /// compute the *_views scores (five encoder passes per image).
  OodScorer(Pae& pae, const at::Tensor& reference, std::string reference_name, bool views = true);
  ScoreMap operator()(const at::Tensor& images) const;
  /// "tails:a+b" of two single scores: -log of the smaller upper-tail probability of a and b among
  /// the reference's (metrics::either_tail). `scores` must hold a and b.
  at::Tensor combined(const std::string& name, const ScoreMap& scores) const;
  static std::string combination(const std::string& a, const std::string& b) { return "tails:" + a + "+" + b; }
  static bool is_combination(const std::string& name) { return name.rfind("tails:", 0) == 0; }
  const std::string& reference_name() const { return reference_name_; }
  /// What each derived score is, for a report's protocol.
  static std::map<std::string, std::string> descriptions();

 private:
  ScoreMap with_derived(const at::Tensor& images, ScoreMap s) const;
  Pae& pae_;
  bool views_;
  std::string reference_name_;
  ScoreMap reference_;  ///< the reference images' scores (every single score)
};

/// A validation OoD set made from in-distribution images x:[N,C,H,W] in [0, 1].
struct ImageTransform {
  std::string name, what;
  std::function<at::Tensor(const at::Tensor&)> apply;
};
/// vflip, rot90, invert, jigsaw, blur, mix, pixel-shuffle.
const std::vector<ImageTransform>& validation_transforms();
/// The transforms "--select-on all" means: every one but pixel-shuffle (noise-like, close to the
/// reported noise set).
std::vector<std::string> default_validation_transforms();
const ImageTransform& validation_transform(const std::string& name);  ///< error naming the known ones

/// The score chosen on validation sets: every candidate's AUROC on each, the highest mean wins
/// (ties: the higher minimum, then the name); the threshold flags `fpr` of the in-distribution
/// validation images.
struct ScoreChoice {
  struct Candidate {
    std::string score;
    std::map<std::string, double> auroc;  ///< validation set -> AUROC
    double mean = 0, min = 0;
  };
  std::vector<Candidate> candidates;  ///< best first
  std::string chosen;
  double fpr = 0.05, threshold = 0;
};
/// Candidates: every score of `in` (single scores) and every pairwise tails:a+b of them.
/// `out` maps each validation set to its scores (the same names as `in`).
ScoreChoice choose_score(const OodScorer& scorer, const ScoreMap& in, const std::map<std::string, ScoreMap>& out,
                         double fpr = 0.05);

}  // namespace pae::eval
