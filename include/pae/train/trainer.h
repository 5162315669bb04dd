// Runs of the auto-encoder family through the engine, and run-directory conventions.
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

namespace pae::report {
class EventWriter;
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
  int64_t model_epoch = 0;                     ///< epoch of the run's model (best or last)
  double images_per_second = 0;                ///< training throughput of the last epoch
  std::map<std::string, double> test_metrics;  ///< e.g. "mse", "neg_elbo"
};

/// On --resume, before anything is trained: compares `config` with the one the run's last
/// checkpoint was written under (RUN/config.yml for checkpoints from before configs were
/// stored). Keys that may not change (may_change_on_resume) are one error naming each key with
/// both values; the others are logged, RUN/config.yml is rewritten to the config the run now
/// follows, and the change is appended to RUN/config_history.jsonl.
void reconcile_resume_config(const std::string& run_dir, const Config& config);

/// A run directory held by this process while the object lives: checked (an existing run is
/// touched only with `resume`, or replaced with `force`: what a previous run wrote is removed),
/// locked against every other writer (RUN/.lock holds the owner's pid under flock(2), which the
/// kernel releases when the process dies, so a killed run resumes without a stale lock), and
/// logged to (RUN/<log_name>, every line flushed). A second process (or a second holder in this
/// one) gets an error naming the holder's pid. The log file stops receiving lines on destruction.
class RunDirectory {
 public:
  RunDirectory(const std::string& dir, bool resume, bool force, const std::string& log_name);
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;

 private:
  int lock_fd_ = -1;
  std::shared_ptr<void> sink_;  // the spdlog file sink (type kept out of this header)
};

/// The optimizer and schedule of every parameter group, from the train section.
OptimizerOptions optimizer_options(const TrainOptions& t);

/// `base` with the keys a `groups.<name>` entry gives.
OptimizerOptions with_group(OptimizerOptions base, const GroupOptions& group);

/// Engine options from the config (train section: epochs, batch, seed, optimizer, patience;
/// groups section: per-group optimizers) for a run directory on `device`.
EngineOptions engine_options(const Config& config, const std::string& run_dir, c10::Device device, bool resume,
                             bool quiet);

/// The default sinks of a run: metrics.jsonl and TensorBoard scalars (RUN/tensorboard/) in
/// run_dir and, unless quiet, a log line per epoch.
/// `events` (optional) receives the run's TensorBoard writer (RUN/tensorboard/).
std::vector<std::shared_ptr<report::MetricsSink>> run_sinks(const std::string& run_dir, int64_t epochs, bool quiet,
                                                            std::shared_ptr<report::EventWriter>* events = nullptr);

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
                                                      const std::string& which = "");

}  // namespace pae::train
