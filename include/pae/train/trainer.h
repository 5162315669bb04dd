// The training loop shared by every auto-encoder family, and run-directory conventions.
//
// A run directory holds: config.yml (resolved), train.log, metrics.jsonl (one JSON object per
// epoch), checkpoints/{last,best}.pt, recon.png, samples.png, summary.json and
// latents/{train,val,test}.npy with {split}_labels.npy.
#pragma once
#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "pae/config.h"

namespace torch::optim {
class Optimizer;
}

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

}  // namespace pae::train

namespace pae::models {
class AutoEncoder;
}

namespace pae::train {

/// Rebuilds a trained auto-encoder from its run directory (config.yml + checkpoints/<which>.pt),
/// in evaluation mode. Errors name the files.
std::shared_ptr<models::AutoEncoder> load_autoencoder(const std::string& run_dir, Config* config_out = nullptr,
                                                      const std::string& which = "best");

/// Seeded per-epoch permutation of [0, n) (our own generator: the same on every LibTorch).
at::Tensor epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

/// Sets the learning rate of every parameter group of an Adam optimizer.
void set_lr(torch::optim::Optimizer& optimizer, double lr);

/// Learning rate of epoch `epoch_index` (0-based) under t.lr_schedule.
double scheduled_lr(const TrainOptions& t, int64_t epoch_index);

/// Signature stored in checkpoints: type, arch, latent size and image shape.
std::string model_signature(const ModelOptions& model, const std::vector<int64_t>& image_shape);

}  // namespace pae::train
