// Runs of the auto-encoder family through the one run scaffold (pae/train/run.h).
//
// A run directory holds: config.yml (resolved), train.log, metrics.jsonl (one JSON object per
// epoch), checkpoints/{last,best}.pt, recon.png, samples.png, summary.json and
// latents/{train,val,test}.npy with {split}_labels.npy. Every output after training (test
// metrics, pictures, latents) is made from the run's model: the checkpoint named by
// train.model_checkpoint (best by default), the same one later programs load.
#pragma once
#include <c10/core/Device.h>

#include <map>
#include <memory>
#include <string>

#include "pae/config.h"
#include "pae/train/engine.h"
#include "pae/train/run.h"

namespace pae::train {

struct TrainSummary {
  int64_t epochs_completed = 0;
  int64_t model_epoch = 0;                     ///< epoch of the run's model (best or last)
  double images_per_second = 0;                ///< training throughput of the last epoch
  std::map<std::string, double> test_metrics;  ///< e.g. "mse", "neg_elbo"
};

/// Trains config's auto-encoder into options.run_dir (see the header comment for its layout).
TrainSummary train_autoencoder(const Config& config, const RunOptions& options);

}  // namespace pae::train

namespace pae::models {
class AutoEncoder;
}

namespace pae::train {

/// Rebuilds a trained auto-encoder from its run directory (config.yml + its model checkpoint:
/// `which` = best | last, empty = the run's train.model_checkpoint), in evaluation mode.
/// Errors name the files.
std::shared_ptr<models::AutoEncoder> load_autoencoder(const std::string& run_dir, Config* config_out = nullptr,
                                                      const std::string& which = "", int64_t* model_epoch = nullptr);

}  // namespace pae::train
