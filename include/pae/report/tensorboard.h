// TensorBoard event files written by hand: the TFRecord framing (length, masked CRC-32C,
// serialized Event, masked CRC-32C) around Event/Summary protos encoded field by field, so
// `tensorboard --logdir runs/` shows scalars, histograms and images without protobuf here.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "pae/report/sinks.h"

namespace pae::report {

/// CRC-32C (Castagnoli), and TFRecord's masked form of it.
uint32_t crc32c(const void* data, size_t size);
uint32_t masked_crc32c(const void* data, size_t size);

/// One events file, `dir/events.out.tfevents.<seconds>.pae`; every record is flushed as written.
/// A writer opened on a folder that already holds an events file (a resumed run) continues it.
class EventWriter {
 public:
  explicit EventWriter(const std::string& dir);
  const std::string& path() const { return path_; }
  void scalar(const std::string& tag, double value, int64_t step);
  /// The values' histogram in `bins` equal buckets (TensorBoard's histogram and distribution tabs).
  void histogram(const std::string& tag, const std::vector<double>& values, int64_t step, int bins = 30);
  /// An already encoded PNG of `width` x `height` pixels and `channels` channels.
  void image(const std::string& tag, const std::string& png, int64_t width, int64_t height, int64_t channels,
             int64_t step);
  /// Drops the events of steps after `step` (a run resumed from its checkpoint runs them again).
  void truncate_after(int64_t step);

 private:
  void write_event(const std::string& summary_value, int64_t step);
  std::string path_;
};

/// Every value of every epoch as a scalar of the same name (metrics.jsonl's keys), at step = epoch.
class TensorBoardSink : public MetricsSink {
 public:
  explicit TensorBoardSink(std::shared_ptr<EventWriter> writer) : writer_(std::move(writer)) {}
  void on_epoch(const EpochRecord& record) override;
  void on_resume(int64_t epoch) override { writer_->truncate_after(epoch); }

 private:
  std::shared_ptr<EventWriter> writer_;
};

}  // namespace pae::report
