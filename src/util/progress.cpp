#include "pae/util/progress.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>

namespace pae {

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double Progress::rate() const {
  const double s = elapsed_seconds();
  return s > 0 ? static_cast<double>(items_) / s : 0.0;
}

void Progress::update(int64_t steps, int64_t items, const std::function<std::string()>& status) {
  done_ += steps;
  items_ += items;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = elapsed_seconds();
  const double eta = done_ > 0 ? elapsed * static_cast<double>(total_ - done_) / done_ : 0.0;
  if (tty_) {
    if (now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
    last_draw_ = now;
    const int width = 30;
    const int filled = total_ > 0 ? static_cast<int>(width * done_ / total_) : width;
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld %.0f %s/s ETA %.0fs %s\033[K", label_.c_str(), bar.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), rate(), unit_.c_str(), eta,
                 status ? status().c_str() : "");
    std::fflush(stderr);
  } else {
    // Plain lines at every 10% so that logs stay readable.
    const int decile = total_ > 0 ? static_cast<int>(10 * done_ / total_) : 10;
    if (decile > last_decile_ && decile < 10) {
      last_decile_ = decile;
      spdlog::info("{} {}% ({}/{}) {:.0f} {}/s ETA {:.0f}s {}", label_, decile * 10, done_, total_, rate(), unit_, eta,
                   status ? status() : std::string());
    }
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace pae
