// Data-parallel training on PyTorch's own distributed engine, c10d: torchrun's environment, the
// process group (a TCPStore at MASTER_ADDR:MASTER_PORT; Gloo on the CPU, NCCL for CUDA where
// LibTorch has it) and the few collectives the engine and the run scaffold use. The engine
// reduces the gradients (one place: its step); the run scaffold decides who writes (rank 0).
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace pae::train {

/// What torchrun (or scripts/launch.sh, or a Slurm wrapper) tells each worker.
struct LaunchEnv {
  int rank = 0, world_size = 1;              ///< RANK, WORLD_SIZE
  int local_rank = 0, local_world_size = 1;  ///< LOCAL_RANK, LOCAL_WORLD_SIZE
  std::string master_addr = "127.0.0.1";     ///< MASTER_ADDR
  int master_port = 29500;                   ///< MASTER_PORT
  std::string run_id;                        ///< TORCHELASTIC_RUN_ID, where present
  bool distributed() const { return world_size > 1; }
};

/// Reads torchrun's environment: a single process where WORLD_SIZE is unset or 1; otherwise every
/// variable must be there and consistent (a WORLD_SIZE without RANK, a RANK out of range, a port
/// that is not a number: one error naming the variable and its value). A lone RANK without
/// WORLD_SIZE is an error too (it would train every sample, unwarned).
LaunchEnv read_launch_env();

/// A process group of `world_size` ranks, joined at construction.
class ProcessGroup {
 public:
  /// Joins the group `env` describes over a TCPStore (rank 0 serves it) with `backend`: "gloo",
  /// "nccl" or "auto" (NCCL where the device is CUDA and LibTorch has it, else Gloo). Waits at most
  /// `timeout_s` for the other ranks, here and in every collective after.
  ProcessGroup(const LaunchEnv& env, const std::string& backend, bool cuda, double timeout_s);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& backend() const { return backend_; }

  /// Sums the tensors over the ranks, in place, through one flat buffer per call (one
  /// collective: the tensors must share dtype and device).
  void allreduce_sum(const std::vector<at::Tensor>& tensors);
  /// Rank 0's values of the tensors, in place, on every rank (one flat buffer per call).
  void broadcast(const std::vector<at::Tensor>& tensors);
  /// Returns when every rank has called it.
  void barrier();
  /// An error naming `what` unless every rank holds the same `text` (compared by a hash).
  void require_same(const std::string& text, const std::string& what);

  /// What the all-reduces have cost so far: bytes of this rank's buffers, calls, wall time.
  int64_t bytes_reduced() const { return bytes_; }
  int64_t collectives() const { return calls_; }
  double seconds_in_collectives() const { return seconds_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
  std::string backend_;
  int64_t bytes_ = 0, calls_ = 0;
  double seconds_ = 0;
};

/// Whether this process writes a run's files: rank 0 of `ranks`, or a single process (null). The
/// one rule for the run directory (TrainingRun) and the checkpoints (Engine).
inline bool writes_run_files(const ProcessGroup* ranks) { return ranks == nullptr || ranks->rank() == 0; }

/// For a program torchrun started as one of several ranks: joins their group with `backend` (waits
/// at most timeout_s for the others, and in every collective), puts a plain CUDA `device` on this
/// rank's GPU (cuda -> cuda:LOCAL_RANK), and quiets ranks other than 0 (no progress lines;
/// warnings and errors only). Null for a single process.
std::shared_ptr<ProcessGroup> join_launched_ranks(std::string& device, bool& quiet, const std::string& backend,
                                                  double timeout_s);

}  // namespace pae::train
