#include "pae/util/run_state.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"

namespace pae {

std::string RunState::describe() const {
  std::string out = state.empty() ? "not recorded" : state;
  if (epoch >= 0) out += " after epoch " + std::to_string(epoch);
  if (!reason.empty()) out += " (" + reason + ")";
  return out;
}

void write_run_state(const std::string& run_dir, const std::string& state, const std::string& reason, int64_t epoch) {
  JsonObject o;
  o.add("state", state).add("reason", reason).add("epoch", epoch).add("pid", int64_t(::getpid()));
  atomic_write_text(fs::path(run_dir) / "state.json", o.str() + "\n");
}

RunState read_run_state(const std::string& run_dir) {
  const fs::path path = fs::path(run_dir) / "state.json";
  RunState s;
  if (!fs::exists(path)) return s;
  try {
    const auto j = nlohmann::json::parse(read_text(path));
    s.state = j.at("state").get<std::string>();
    s.reason = j.value("reason", "");
    s.epoch = j.value("epoch", int64_t(-1));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": not a run state (" + e.what() + ")");
  }
  if (s.state == "running" && !FolderLock::held(run_dir, ".lock")) {
    s.state = "killed";
    s.reason = "its process ended without saying how: SIGKILL, out of memory or a crash; see its log";
    if (fs::exists(fs::path(run_dir) / "metrics.jsonl")) {  // the epochs it logged
      const auto text = read_text(fs::path(run_dir) / "metrics.jsonl");
      s.epoch = int64_t(std::count(text.begin(), text.end(), '\n'));
    }
  }
  return s;
}

void check_run_finished(const std::string& run_dir, const std::string& which, int64_t model_epoch, bool strict) {
  const auto s = read_run_state(run_dir);
  if (s.finished()) return;
  const std::string what = run_dir + " is " + s.describe() + ": its " + which + " checkpoint" +
                           (model_epoch >= 0 ? " (epoch " + std::to_string(model_epoch) + ")" : "") +
                           " is from an unfinished run";
  require(!strict, what + "; --resume the run to finish it, or drop --strict to use it anyway");
  spdlog::warn("{} (--strict refuses it)", what);
}

}  // namespace pae
