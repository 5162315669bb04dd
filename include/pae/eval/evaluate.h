// Evaluation glue shared by pae-eval's subcommands: named evaluation sets, batched per-sample
// scores of an auto-encoder (and its flow), and the OoD table.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pae/config.h"
#include "pae/data/dataset.h"

namespace pae::models {
class AutoEncoder;
}
namespace pae::flows {
class LatentFlow;
}

namespace pae::eval {

/// "name[:split]" (split defaults to test), loaded with the auto-encoder's data options
/// (root kept only for the same dataset) and shaped like its input: synthetic sets take the
/// AE's channels and size; a real set of another shape is an error naming both shapes.
/// limit > 0 keeps the first `limit` images. An empty set is an error.
data::Dataset load_set(const std::string& spec, const Config& ae_config, const std::vector<int64_t>& image_shape,
                       int64_t limit = 0);

/// Per-sample scores, higher = more anomalous, each [N] float64 on the CPU: the model's own
/// (recon_mse, latent_norm, neg_elbo for VAEs, ...) plus "neg_log_p_z" when a flow is given.
/// Batched, in evaluation mode, without gradients.
std::map<std::string, at::Tensor> compute_scores(models::AutoEncoder& model, flows::LatentFlow* flow,
                                                 const at::Tensor& images, int64_t batch = 500);

/// Refuses a flow fitted on another auto-encoder's latents: dimension, then the checksum of
/// RUN/latents/train.npy recorded in FLOW/latents.json.
void check_flow_matches(const std::string& flow_dir, const std::string& ae_run, int64_t flow_dim, int64_t ae_dim);

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
