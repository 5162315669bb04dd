// The one training loop: epochs x batches over the phases of a Trainable, one optimizer and
// schedule per parameter group, validation, best/last checkpoints, early stopping, exact
// resume, and metrics through sinks. Every trainer of the project (auto-encoders, flows on
// latents, the domain classifier, the benchmarks) runs through Engine::fit.
//
// Files under options.run_dir (when not empty): checkpoints/last.pt after every epoch (the
// commit point: a resumed run continues from it with the same model, optimizers, RNG, data
// order, phase and early-stopping state) and checkpoints/best.pt whenever the monitored
// quantity improves. Metrics sinks hear about an epoch before its checkpoint is written; on
// resume they drop what they wrote after the checkpoint.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pae/nn/trainable.h"
#include "pae/report/sinks.h"
#include "pae/train/checkpoint.h"
#include "pae/train/optim.h"

namespace pae::train {

class ProcessGroup;

/// The training set as the engine sees it: its size and how to make a batch from indices
/// (selection, augmentation, transfer to the device).
struct TrainData {
  int64_t size = 0;
  std::function<nn::Batch(const at::Tensor& indices)> batch;
  nn::Batch validation;  ///< the whole validation set, on the CPU (x undefined: none)
  int64_t eval_batch_size = 1000;
};

struct EngineOptions {
  std::string run_dir;  ///< empty: no checkpoints (benchmarks)
  c10::Device device = c10::Device(c10::kCPU);
  int64_t epochs = 1;  ///< handed to Trainable::phases
  int64_t batch_size = 128;
  uint64_t seed = 0;  ///< data order: epoch_permutation(n, seed, epoch)
  /// Optimizer and schedule per parameter group; the entry "" is the default of every group
  /// without its own.
  std::map<std::string, OptimizerOptions> optimizers;
  int64_t patience = 0;                   ///< end a phase after this many epochs without improvement (0 = off)
  bool resume = false;                    ///< continue from run_dir/checkpoints/last.pt
  bool quiet = false;                     ///< no progress bar
  std::string unit = "img";               ///< progress unit
  std::string rate_key = "images_per_s";  ///< throughput's name in the metrics
  bool drop_singleton_batch = true;       ///< skip a last batch of one (it breaks batch norm)
  /// A step whose loss or gradient is not finite: "stop" (an error naming epoch, step and
  /// group, before the update; the last checkpoint stays intact), "skip" (no update; the
  /// epoch's count goes to the metrics as nonfinite_steps) or "reduce_lr" (as skip, and the
  /// group's learning rate is halved from then on; the factor is checkpointed).
  std::string nonfinite = "stop";
  std::string config_yaml;  ///< the resolved config, stored in every checkpoint (resume compares it)
  /// Polyak averaging: > 0 keeps an exponential moving average of the parameters with this decay
  /// per step (warmed up as min(ema, (1 + t) / (10 + t))). Validation, early stopping and both
  /// checkpoints' models use the averaged weights; the raw weights training continues from are
  /// kept beside them in the checkpoints for resume.
  double ema = 0;
  /// Checkpoints inside an epoch (checkpoints/mid_epoch.pt: the exact state after a step, which
  /// --resume continues from as an uninterrupted run would): every this many optimizer steps
  /// and/or minutes (0: not by that). A stop signal (pae::defer_stop_signals) writes one at the
  /// next step boundary and ends the fit with pae::Stopped.
  int64_t checkpoint_every_steps = 0;
  double checkpoint_every_minutes = 0;
  /// Data-parallel training (null: a single process): each rank trains on its part of every
  /// global batch, gradients are averaged over the ranks at each step, metrics over every rank's
  /// batches; only rank 0 writes checkpoints.
  std::shared_ptr<ProcessGroup> ranks;
};

/// What a fit ended with.
struct FitResult {
  CheckpointState state;
  report::EpochRecord last;  ///< the last epoch run in this call (epoch 0 if none)
  double items_per_second = 0;
};

class Engine {
 public:
  Engine(EngineOptions options, std::vector<std::shared_ptr<report::MetricsSink>> sinks = {});
  ~Engine();
  /// Trains `trainable` (already on options.device) on `data` through all its phases.
  FitResult fit(nn::Trainable& trainable, const TrainData& data);
  const EngineOptions& options() const { return options_; }

 private:
  struct Fit;  // one fit in progress (engine.cpp)
  /// Optimizers per group, a resumed checkpoint, averaging, phases and the step context.
  void set_up(Fit& f);
  /// Loads the newest checkpoint (mid_epoch.pt, else last.pt; none: from scratch, saying so).
  void resume(Fit& f);
  /// Moves to the next phase where one has ended; false when every phase is done.
  bool next_epoch(Fit& f);
  /// One epoch's batches at the epoch's learning rates; its training terms (all finite).
  nn::Terms train_epoch(Fit& f);
  /// Validation, early stopping, metrics to the sinks, checkpoints.
  void end_epoch(Fit& f, const nn::Terms& train_terms);
  /// Counts the epoch, updates best, patience and the learning-rate factors; whether it improved.
  bool update_progress(Fit& f, const nn::Terms& train_terms, const nn::Terms& val_terms);
  report::EpochRecord epoch_record(Fit& f, const nn::Terms& train_terms, const nn::Terms& val_terms);
  void write_checkpoints(Fit& f, bool improved);
  /// After a batch of an epoch: a mid-epoch checkpoint when one is due or a stop signal came
  /// (then pae::Stopped is thrown). With several ranks, every rank decides alike.
  void after_batch(Fit& f, int64_t batches_done, int64_t batches);
  /// Whether this process wants a mid-epoch checkpoint after optimizer step `step` (1-based).
  bool checkpoint_due(const Fit& f, int64_t step) const;
  /// checkpoints/mid_epoch.pt: the state after `batches_done` batches of the epoch in progress.
  void write_mid_epoch(Fit& f, int64_t batches_done);
  std::string checkpoint(const std::string& which) const;
  /// Rank 0's weights on every rank, and each rank's own random stream.
  void start_ranks(Fit& f);
  /// This rank's rows [first, last) of a global batch of m samples (all of them in a single
  /// process; none when there are fewer samples than ranks).
  std::pair<int64_t, int64_t> rank_rows(int64_t m) const;
  /// Floating-point buffers (batch norm's running statistics) averaged over the ranks.
  /// An Error when the fit ends with no epoch whose monitored value was finite (no best model).
  void check_a_best_model(const Fit& f) const;
  void average_buffers(Fit& f);
  /// The validation terms (rank 0's on every rank).
  nn::Terms validation(Fit& f);
  bool writes() const;

  EngineOptions options_;
  std::vector<std::shared_ptr<report::MetricsSink>> sinks_;
};

/// Refuses optimizer options for a group the trainable does not have (an error naming the
/// group and listing the trainable's). Engine::fit checks it; runs call it before writing.
void check_groups(const EngineOptions& options, nn::Trainable& trainable);

/// Seeded permutation of [0, n) for epoch `epoch` (our own generator: the same on every LibTorch).
at::Tensor epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

/// Path of a run's checkpoint `which`: "best", "last", "phase_<name>" (written when phase
/// <name> of a multi-phase trainable ends: the NAE's "phase_ae" is its AE before phase 2) or
/// "mid_epoch" (inside the epoch after last.pt's, when one was asked for or a signal stopped the
/// run; removed when that epoch ends).
std::string checkpoint_path(const std::string& run_dir, const std::string& which);

/// Loads the weights of run_dir/checkpoints/<which>.pt into `trainable` (no optimizer, no RNG
/// change); errors name the file. Used to make a run's outputs from its designated model.
CheckpointState load_weights(const std::string& run_dir, const std::string& which, nn::Trainable& trainable);

}  // namespace pae::train
