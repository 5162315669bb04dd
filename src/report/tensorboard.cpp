#include "pae/report/tensorboard.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>

#include "pae/util/error.h"
#include "pae/util/fs.h"

namespace pae::report {

namespace {

// Protocol-buffer wire format, the few field kinds the Event/Summary protos use.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += char(v);
}
void tag_of(std::string& out, int field, int wire) { varint(out, uint64_t(field) << 3 | uint64_t(wire)); }
void field_bytes(std::string& out, int field, const std::string& bytes) {
  tag_of(out, field, 2);
  varint(out, bytes.size());
  out += bytes;
}
void field_varint(std::string& out, int field, int64_t v) {
  tag_of(out, field, 0);
  varint(out, uint64_t(v));
}
void field_double(std::string& out, int field, double v) {
  tag_of(out, field, 1);
  char b[8];
  std::memcpy(b, &v, 8);
  out.append(b, 8);
}
void field_float(std::string& out, int field, float v) {
  tag_of(out, field, 5);
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}
void field_packed_doubles(std::string& out, int field, const std::vector<double>& vs) {
  std::string packed;
  for (const double v : vs) {
    char b[8];
    std::memcpy(b, &v, 8);
    packed.append(b, 8);
  }
  field_bytes(out, field, packed);
}

void le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += char((v >> (8 * i)) & 0xff);
}
uint64_t read_le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(static_cast<unsigned char>(s[at + size_t(i)])) << (8 * i);
  return v;
}

/// The record framing of TFRecord files.
std::string record(const std::string& data) {
  std::string out, len;
  le(len, data.size(), 8);
  out += len;
  le(out, masked_crc32c(len.data(), len.size()), 4);
  out += data;
  le(out, masked_crc32c(data.data(), data.size()), 4);
  return out;
}

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// Event { wall_time = 1 (double), step = 2 (int64), file_version = 3 (string) | summary = 5 }.
std::string event(int64_t step, const std::string& body_field) {
  std::string e;
  field_double(e, 1, wall_time());
  field_varint(e, 2, step);
  e += body_field;
  return e;
}

/// Summary.Value { tag = 1, <field> = message }.
std::string value_of(const std::string& tag, int field, const std::string& message) {
  std::string v;
  field_bytes(v, 1, tag);
  field_bytes(v, field, message);
  return v;
}

/// The step of a serialized Event (field 2), or -1.
int64_t event_step(const std::string& e) {
  size_t at = 0;
  const auto read_varint = [&](uint64_t& v) {
    v = 0;
    for (int shift = 0; at < e.size() && shift < 64; shift += 7) {
      const auto b = static_cast<unsigned char>(e[at++]);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  };
  while (at < e.size()) {
    uint64_t key = 0, v = 0;
    if (!read_varint(key)) return -1;
    const int field = int(key >> 3), wire = int(key & 7);
    if (wire == 0) {
      if (!read_varint(v)) return -1;
      if (field == 2) return int64_t(v);
    } else if (wire == 1) {
      at += 8;
    } else if (wire == 5) {
      at += 4;
    } else if (wire == 2) {
      if (!read_varint(v)) return -1;
      at += v;
    } else {
      return -1;
    }
  }
  return -1;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

EventWriter::EventWriter(const std::string& dir) {
  ensure_dir(dir);
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) path_ = e.path().string();
  if (!path_.empty()) return;  // a resumed run continues its file
  path_ = (fs::path(dir) / ("events.out.tfevents." + std::to_string(int64_t(wall_time())) + ".pae")).string();
  std::string version;
  field_bytes(version, 3, "brain.Event:2");
  append_bytes(path_, record(event(0, version)));
}

void EventWriter::write_event(const std::string& summary_value, int64_t step) {
  std::string summary, body;
  field_bytes(summary, 1, summary_value);  // Summary { repeated Value value = 1 }
  field_bytes(body, 5, summary);
  append_bytes(path_, record(event(step, body)));
}

void EventWriter::scalar(const std::string& tag, double value, int64_t step) {
  std::string v;  // Value { tag = 1, simple_value = 2 }
  field_bytes(v, 1, tag);
  field_float(v, 2, float(value));
  write_event(v, step);
}

void EventWriter::histogram(const std::string& tag, const std::vector<double>& values, int64_t step, int bins) {
  std::vector<double> finite;
  for (const double x : values)
    if (std::isfinite(x)) finite.push_back(x);
  if (finite.empty()) return;
  const auto [lo_it, hi_it] = std::minmax_element(finite.begin(), finite.end());
  const double lo = *lo_it, hi = *hi_it, width = hi > lo ? (hi - lo) / bins : 1.0;
  std::vector<double> limits, counts(size_t(bins), 0.0);
  for (int i = 1; i <= bins; ++i) limits.push_back(i == bins ? hi : lo + width * i);
  double sum = 0, sum_sq = 0;
  for (const double x : finite) {
    const int b = std::min(bins - 1, int((x - lo) / width));
    counts[size_t(b)] += 1;
    sum += x;
    sum_sq += x * x;
  }
  // HistogramProto { min 1, max 2, num 3, sum 4, sum_squares 5, bucket_limit 6, bucket 7 }
  std::string h;
  field_double(h, 1, lo);
  field_double(h, 2, hi);
  field_double(h, 3, double(finite.size()));
  field_double(h, 4, sum);
  field_double(h, 5, sum_sq);
  field_packed_doubles(h, 6, limits);
  field_packed_doubles(h, 7, counts);
  write_event(value_of(tag, 5, h), step);  // Value.histo = 5
}

void EventWriter::image(const std::string& tag, const std::string& png, int64_t width, int64_t height, int64_t channels,
                        int64_t step) {
  std::string img;  // Image { height 1, width 2, colorspace 3, encoded_image_string 4 }
  field_varint(img, 1, height);
  field_varint(img, 2, width);
  field_varint(img, 3, channels);
  field_bytes(img, 4, png);
  write_event(value_of(tag, 4, img), step);  // Value.image = 4
}

void EventWriter::truncate_after(int64_t step) {
  if (!fs::exists(path_)) return;
  const std::string bytes = read_text(path_);
  std::string kept;
  bool dropped = false;
  for (size_t at = 0; at + 12 <= bytes.size();) {
    const uint64_t len = read_le(bytes, at, 8);
    if (at + 16 > bytes.size() || len > bytes.size() - at - 16) break;  // cut short by a kill: dropped
    const std::string e = bytes.substr(at + 12, len);
    if (event_step(e) <= step) {
      kept += bytes.substr(at, 16 + len);
    } else {
      dropped = true;
    }
    at += 16 + len;
  }
  if (dropped || kept.size() != bytes.size()) atomic_write_text(path_, kept);
}

void TensorBoardSink::on_epoch(const EpochRecord& record) {
  for (const auto& [key, value] : record.values)
    if (std::isfinite(value)) writer_->scalar(key, value, record.epoch);
}

}  // namespace pae::report
