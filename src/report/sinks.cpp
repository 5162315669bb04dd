#include "pae/report/sinks.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"

namespace pae::report {

double EpochRecord::get(const std::string& key) const {
  for (const auto& [k, v] : values)
    if (k == key) return v;
  return std::numeric_limits<double>::quiet_NaN();
}

void JsonLinesSink::on_epoch(const EpochRecord& r) {
  JsonObject line;
  line.add("epoch", r.epoch);
  if (!r.phase.empty()) line.add("phase", r.phase);
  for (const auto& [k, v] : r.values) line.add(k, v);
  append_line(path_, line.str());
}

void JsonLinesSink::truncate_after(const std::string& path, int64_t epoch) {
  if (!fs::exists(path)) return;
  std::istringstream in(read_text(path));
  std::string kept, line;
  bool dropped = false;
  while (std::getline(in, line)) {
    // Every line starts {"epoch": N, ... (written above).
    const auto at = line.find("\"epoch\": ");
    const bool keep = at != std::string::npos && std::stoll(line.substr(at + 9)) <= epoch;
    if (keep) {
      kept += line + "\n";
    } else {
      dropped = true;
    }
  }
  if (dropped) atomic_write_text(path, kept);
}

void LogSink::on_epoch(const EpochRecord& r) {
  std::string train, val, rest;
  for (const auto& [k, v] : r.values) {
    const std::string s = fmt::format("{}={:.6g}", k.substr(k.find('_') + 1), v);
    if (k.rfind("train_", 0) == 0) {
      train += (train.empty() ? "" : " ") + s;
    } else if (k.rfind("val_", 0) == 0) {
      val += (val.empty() ? "" : " ") + s;
    } else if (k.size() > 6 && k.compare(k.size() - 6, 6, "_per_s") == 0) {
      rest += fmt::format(" | {:.0f} {}/s", v, k.substr(0, k.size() - 6));
    } else if (k == "seconds") {
      rest += fmt::format(", {:.1f}s", v);
    }
  }
  spdlog::info("epoch {}/{}{}: train {} | val {}{}", r.epoch, total_, r.phase.empty() ? "" : " (" + r.phase + ")",
               train, val.empty() ? "-" : val, rest);
}

}  // namespace pae::report
