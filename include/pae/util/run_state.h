// How a run directory's training ended, in RUN/state.json: "running" while a process holds it,
// then "finished", "failed" (with the error) or "stopped" (a signal; --resume continues). A
// "running" whose lock no process holds any more is reported as "killed" (SIGKILL, out of memory,
// a crash). Written by the run scaffold (pae/train/run.h); read by every program that uses a run.
#pragma once
#include <cstdint>
#include <string>

namespace pae {

struct RunState {
  std::string state;   ///< running | finished | failed | stopped | killed; empty: not recorded
  std::string reason;  ///< the error or signal message (failed, stopped, killed)
  int64_t epoch = -1;  ///< epochs completed when it was recorded (-1: unknown)
  bool recorded() const { return !state.empty(); }
  /// Finished, or not recorded (a run from before runs recorded their state).
  bool finished() const { return state.empty() || state == "finished"; }
  /// "killed (...)" etc., for messages.
  std::string describe() const;
};

/// Writes RUN/state.json atomically.
void write_run_state(const std::string& run_dir, const std::string& state, const std::string& reason = "",
                     int64_t epoch = -1);

/// RUN/state.json as it stands (a "running" without a live holder of RUN/.lock is "killed").
RunState read_run_state(const std::string& run_dir);

/// For a program about to use `run_dir`'s checkpoint `which` (of epoch `model_epoch`, -1:
/// unknown): nothing when the run finished; a warning naming the state and the epoch used; or,
/// with `strict`, an error (exit 2) saying how to go on.
void check_run_finished(const std::string& run_dir, const std::string& which, int64_t model_epoch, bool strict);

}  // namespace pae
