// The one run scaffold: what every training run (auto-encoder, flow on latents, domain
// classifier) does around its family's own model and data, and the run-directory conventions.
//
// Every run, in this order: the groups the config names are checked against a probe of the
// trainable (nothing is written for a bad config); the directory is held (lock, log file);
// config.yml is written, or reconciled with the run's own on --resume; every generator is seeded
// with train.seed; the family builds its model and data; the engine fits with the run's sinks
// (metrics.jsonl, TensorBoard, log lines) and the family's own; the run's model (the checkpoint
// named by train.model_checkpoint) is loaded back, so that every output made after the fit comes
// from the checkpoint later programs load.
#pragma once
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "pae/config.h"
#include "pae/train/distributed.h"
#include "pae/train/engine.h"
#include "pae/util/fs.h"

namespace pae::report {
class EventWriter;
}

namespace pae::train {

/// Where and how a run trains (pae-train's and pae-flow's flags).
struct RunOptions {
  std::string run_dir;
  std::string device;   ///< cpu | cuda | cuda:N | auto; empty: config train.device
  bool resume = false;  ///< continue from checkpoints/last.pt
  bool force = false;   ///< replace an existing run directory
  bool quiet = false;   ///< no progress output (tests)
  /// Data-parallel training (read_launch_env, ProcessGroup): only rank 0 touches the directory.
  std::shared_ptr<ProcessGroup> ranks;
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
  std::unique_ptr<FolderLock> lock_;  // RUN/.lock
  std::shared_ptr<void> sink_;        // the spdlog file sink (type kept out of this header)
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

/// A run in progress: the steps before training in its constructor, the fit and the reload in fit().
class TrainingRun {
 public:
  /// Checks `engine`'s groups against `probe` (built for that and dropped), holds the directory
  /// (RUN/<log_name>), writes or reconciles RUN/config.yml, seeds every generator. With several
  /// ranks, the ranks' resolved configs must be the same, and only rank 0 does the writing.
  TrainingRun(const Config& config, const RunOptions& options, const std::string& log_name, nn::Trainable& probe,
              EngineOptions engine);
  /// Records how the run ended in RUN/state.json (pae/util/run_state.h): "finished" when it goes
  /// out of scope normally (the family's outputs written), "failed" on the way out of an error,
  /// "stopped"/"failed" with the message when the fit itself ends by a signal or an error.
  ~TrainingRun();
  TrainingRun(const TrainingRun&) = delete;
  TrainingRun& operator=(const TrainingRun&) = delete;
  /// Whether this process writes the run's files (rank 0, or a single process); the others
  /// return from their run once the fit is done.
  bool writes() const { return held_ != nullptr; }
  /// The run's sinks for `epochs` epochs (run_sinks; none on ranks other than 0); `events`
  /// receives its TensorBoard writer.
  std::vector<std::shared_ptr<report::MetricsSink>> sinks(int64_t epochs,
                                                          std::shared_ptr<report::EventWriter>* events = nullptr) const;
  /// Trains `trainable` (on device()) on `data`, then loads the run's model into it.
  FitResult fit(nn::Trainable& trainable, const TrainData& data,
                std::vector<std::shared_ptr<report::MetricsSink>> sinks);
  /// The epoch of the run's model (after fit()).
  int64_t model_epoch() const { return model_epoch_; }

 private:
  std::string model_checkpoint_;
  RunOptions options_;
  EngineOptions engine_;
  std::unique_ptr<RunDirectory> held_;  // rank 0 (or a single process) only
  int64_t model_epoch_ = 0;
  int64_t epochs_done_ = -1;
  bool state_recorded_ = false;
};

}  // namespace pae::train
