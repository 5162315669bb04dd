// Metrics sinks: where the training engine reports each epoch (JSON lines, the log; later
// TensorBoard events). The engine never writes a metrics file itself.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pae::report {

/// One epoch's numbers, in a fixed order: epoch, phase, train_<term>..., val_<term>...,
/// lr (or lr_<group> with several groups), <unit>_per_s, seconds.
struct EpochRecord {
  int64_t epoch = 0;  ///< 1-based, over all phases
  std::string phase;  ///< empty for single-phase trainables
  std::vector<std::pair<std::string, double>> values;
  /// The value named `key` (NaN when absent).
  double get(const std::string& key) const;
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void on_epoch(const EpochRecord& record) = 0;
  /// A run resumes after `epoch`: forget anything reported for later epochs.
  virtual void on_resume(int64_t /*epoch*/) {}
};

/// One JSON object per epoch appended (and flushed) to a file; non-finite values as null.
class JsonLinesSink : public MetricsSink {
 public:
  explicit JsonLinesSink(std::string path) : path_(std::move(path)) {}
  void on_epoch(const EpochRecord& record) override;
  void on_resume(int64_t epoch) override { truncate_after(path_, epoch); }
  /// Drops the lines of epochs after `epoch` (a resumed run continues from its checkpoint, and
  /// lines written after that checkpoint belong to epochs that will be run again).
  static void truncate_after(const std::string& path, int64_t epoch);

 private:
  std::string path_;
};

/// One human-readable log line per epoch.
class LogSink : public MetricsSink {
 public:
  explicit LogSink(int64_t total_epochs) : total_(total_epochs) {}
  void on_epoch(const EpochRecord& record) override;

 private:
  int64_t total_;
};

/// Keeps every record in memory (benchmarks, tests).
class MemorySink : public MetricsSink {
 public:
  void on_epoch(const EpochRecord& record) override { records.push_back(record); }
  void on_resume(int64_t epoch) override {
    while (!records.empty() && records.back().epoch > epoch) records.pop_back();
  }
  std::vector<EpochRecord> records;
};

}  // namespace pae::report
