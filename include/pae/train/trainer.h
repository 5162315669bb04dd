// The training loop shared by every auto-encoder family, and run-directory conventions.
//
// A run directory holds: config.yml (resolved), train.log, metrics.jsonl (one JSON object per
// epoch), checkpoints/{last,best}.pt, recon.png, samples.png, summary.json and
// latents/{train,val,test}.npy with {split}_labels.npy.
#pragma once
#include <map>
#include <string>

#include "pae/config.h"

namespace pae::train {

struct RunOptions {
  std::string run_dir;
  std::string device = "cpu";
  bool resume = false;  ///< continue from checkpoints/last.pt
  bool force = false;   ///< replace an existing run directory
  bool quiet = false;   ///< no progress output (tests)
};

struct TrainSummary {
  int64_t epochs_completed = 0;
  double images_per_second = 0;               ///< training throughput of the last epoch
  std::map<std::string, double> test_metrics;  ///< e.g. "mse", "neg_elbo"
};

/// Prepares `dir` for a run: refuses to touch an existing, non-empty run unless `resume`
/// (keep it) or `force` (clear what a previous run wrote). Errors name the directory.
void prepare_run_dir(const std::string& dir, bool resume, bool force);

/// Adds a log file sink to the default logger (idempotent per path).
void log_to_file(const std::string& path);

/// Trains config's auto-encoder into options.run_dir (see the header comment for its layout).
TrainSummary train_autoencoder(const Config& config, const RunOptions& options);

/// Signature stored in checkpoints: type, arch, latent size and image shape.
std::string model_signature(const ModelOptions& model, const std::vector<int64_t>& image_shape);

}  // namespace pae::train
