// Progress display: a bar with rate and ETA on a terminal, plain log lines otherwise.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace pae {

class Progress {
 public:
  /// total: number of steps; unit: what a step counts for the rate ("img").
  Progress(std::string label, int64_t total, std::string unit);
  /// Advances by `steps` steps worth `items` units; `status` (shown after the bar) is called
  /// only when a line is drawn, so callers can put a device sync such as .item() in it.
  void update(int64_t steps, int64_t items, const std::function<std::string()>& status = nullptr);
  /// Ends the bar (newline on a terminal).
  void finish();

  double elapsed_seconds() const;
  double rate() const;  ///< items per second so far

 private:
  std::string label_, unit_;
  int64_t total_, done_ = 0, items_ = 0;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int last_decile_ = 0;
};

}  // namespace pae
