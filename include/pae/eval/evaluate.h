// Evaluation sets by name (datasets, synthetic sets, a user's .npy or image folder) and the OoD table.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pae/config.h"
#include "pae/data/dataset.h"

namespace pae::eval {

/// "name[:split]" (split defaults to test), "npy:PATH" or "folder:PATH", or "holdout[:split]" (the
/// classes a run kept out of training, data.holdout_classes, from its own dataset), loaded with the auto-encoder's data
/// options (root kept only for the same dataset) and shaped like its input: synthetic sets take the AE's channels and
/// size; a real set of another shape is an error naming both shapes. limit > 0 keeps the first `limit` images. An empty
/// set is an error.
data::Dataset load_set(const std::string& spec, const Config& ae_config, const std::vector<int64_t>& image_shape,
                       int64_t limit = 0);

/// A score tensor [N] as doubles (for the metrics, which work on vectors).
std::vector<double> to_doubles(const at::Tensor& scores);

/// One row of the OoD table.
struct OodResult {
  std::string set, score;
  double auroc = 0, average_precision = 0, fpr_at_95_tpr = 0;
  int64_t n_in = 0, n_out = 0;
};

/// Every score of `in_scores` against every OoD set (in_scores and each out set must hold the
/// same score names).
std::vector<OodResult> ood_table(const std::map<std::string, at::Tensor>& in_scores,
                                 const std::map<std::string, std::map<std::string, at::Tensor>>& out_scores);

/// The table as Markdown: rows = OoD sets, columns = scores, cells = AUROC.
std::string ood_markdown(const std::vector<OodResult>& rows);

}  // namespace pae::eval
