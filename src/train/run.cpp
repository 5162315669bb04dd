#include "pae/train/run.h"

#include <fcntl.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "pae/report/tensorboard.h"
#include "pae/train/checkpoint.h"
#include "pae/util/error.h"
#include "pae/util/json.h"
#include "pae/util/runtime.h"

namespace pae::train {

namespace {

/// Refuses to touch an existing, non-empty run unless `resume` (keep it) or `force` (replace
/// it); writes nothing. Errors name the directory.
void check_run_dir(const std::string& dir, bool resume, bool force) {
  require(!dir.empty(), "--run-dir must not be empty");
  require(!(resume && force), "--resume and --force: choose one (continue the run, or replace it)");
  const fs::path p(dir);
  const bool exists = fs::exists(p);
  require(!exists || fs::is_directory(p), "run directory " + dir + " exists and is not a directory");
  bool non_empty = false;  // the lock file of an earlier run does not count
  if (exists)
    for (const auto& e : fs::directory_iterator(p)) non_empty = non_empty || e.path().filename() != ".lock";
  if (resume)  // a run stopped before its first checkpoint restarts from scratch (the engine says so)
    require(fs::is_regular_file(p / "config.yml") || fs::is_regular_file(p / "checkpoints" / "last.pt"),
            "--resume: " + dir + " holds no run (neither config.yml nor checkpoints/last.pt); nothing to resume");
  else
    require(!non_empty || force,
            "run directory " + dir + " already exists; pass --resume to continue it or --force to replace it");
}

/// --force: removes what a previous run wrote; anything else the user put there stays.
void remove_previous_run(const fs::path& p) {
  for (const char* name : {"config.yml", "model.json", "train.log", "flow.log", "metrics.jsonl", "checkpoints",
                           "latents", "latents.json", "log_prob", "recon.png", "samples.png", "summary.json",
                           "classifier.pt", "classifier.json", "negatives", "residual_sigma", "tensorboard"}) {
    std::error_code ec;
    fs::remove_all(p / name, ec);
    require(!ec, "--force: cannot remove " + (p / name).string() + ": " + ec.message());
  }
}

}  // namespace

void reconcile_resume_config(const std::string& run_dir, const Config& config) {
  const fs::path run(run_dir);
  std::string source = checkpoint_path(run_dir, "mid_epoch"), before;  // the newest checkpoint's config
  if (!fs::exists(source)) source = checkpoint_path(run_dir, "last");
  if (fs::exists(source)) before = checkpoint_config(source);
  if (before.empty()) {
    before = read_text(run / "config.yml");
    source = (run / "config.yml").string();
  }
  const auto now = to_yaml(config);
  std::vector<ConfigChange> changes, refused;
  try {
    changes = changes_since(before, source, config);
  } catch (const std::exception& e) {
    throw Error(source + ": the stored config cannot be read: " + e.what());
  }
  for (const auto& c : changes)
    if (!may_change_on_resume(c.key)) refused.push_back(c);
  if (!refused.empty()) {
    std::string list;
    for (const auto& c : refused) list += "\n  " + c.key + ": " + c.before + " -> " + c.after;
    throw Error("--resume " + run_dir + ": the run was started with other values of keys that decide what it trains" +
                " (stored in " + source + "):" + list +
                "\nresume with the run's own values, or start a new run (another --run-dir, or --force)");
  }
  if (changes.empty()) return;
  std::string list;
  for (const auto& c : changes) {
    spdlog::info("resume: {} {} -> {}", c.key, c.before, c.after);
    list += (list.empty() ? "" : ", ") + c.key + ": " + c.before + " -> " + c.after;
  }
  const auto stamp = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&stamp));
  append_line(run / "config_history.jsonl",
              JsonObject().add("time", std::string(when)).add("resumed_from", source).add("changes", list).str());
  atomic_write_text(run / "config.yml", now);
}

RunDirectory::RunDirectory(const std::string& dir, bool resume, bool force, const std::string& log_name) {
  // Checks that write nothing first, then the lock, then what --force removes.
  check_run_dir(dir, resume, force);
  const fs::path p(dir);
  ensure_dir(p);
  const auto lock_path = (p / ".lock").string();
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  require(lock_fd_ >= 0, "cannot create the lock file " + lock_path + ": " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    const auto got = ::pread(lock_fd_, buf, sizeof buf - 1, 0);
    ::close(lock_fd_);
    lock_fd_ = -1;
    std::string pid(buf, got > 0 ? size_t(got) : 0);
    while (!pid.empty() && std::isspace(static_cast<unsigned char>(pid.back()))) pid.pop_back();
    throw Error("run directory " + dir + " is in use by process " + (pid.empty() ? "?" : pid) + " (lock " + lock_path +
                "); wait for it to end or choose another --run-dir");
  }
  const auto pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0)
    spdlog::warn("could not write the pid into {}", lock_path);
  try {
    // Temporaries of writes a kill interrupted: this process is now the only writer.
    for (const char* sub : {".", "checkpoints", "latents", "negatives", "log_prob", "tensorboard"}) {
      std::error_code ec;
      if (!fs::is_directory(p / sub)) continue;
      for (const auto& e : fs::directory_iterator(p / sub, ec))
        if (e.is_regular_file() && is_temp_file_name(e.path().filename().string())) {
          spdlog::info("removing {}, left by an interrupted write", e.path().string());
          fs::remove(e.path(), ec);
        }
    }
    if (!resume && force) remove_previous_run(p);
    const auto path = (p / log_name).string();
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
    sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
    spdlog::default_logger()->sinks().push_back(sink);
    spdlog::default_logger()->flush_on(spdlog::level::info);  // a killed run keeps its log
    sink_ = sink;
  } catch (const spdlog::spdlog_ex& e) {
    ::close(lock_fd_);
    throw Error("cannot open log file " + (p / log_name).string() + ": " + e.what());
  } catch (...) {
    ::close(lock_fd_);
    throw;
  }
}

RunDirectory::~RunDirectory() {
  if (sink_) {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), std::static_pointer_cast<spdlog::sinks::sink>(sink_)),
                sinks.end());
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

OptimizerOptions optimizer_options(const TrainOptions& t) {
  OptimizerOptions o;
  o.name = t.optimizer;
  o.lr = t.lr;
  o.weight_decay = t.weight_decay;
  o.momentum = t.momentum;
  o.schedule = t.lr_schedule;
  o.warmup_epochs = t.warmup_epochs;
  o.decay_epoch = t.lr_decay_epoch;
  o.decay = t.lr_decay;
  o.grad_clip = t.grad_clip;
  return o;
}

OptimizerOptions with_group(OptimizerOptions o, const GroupOptions& g) {
  if (g.optimizer) o.name = *g.optimizer;
  if (g.lr) o.lr = *g.lr;
  if (g.momentum) o.momentum = *g.momentum;
  if (g.weight_decay) o.weight_decay = *g.weight_decay;
  if (g.lr_schedule) o.schedule = *g.lr_schedule;
  if (g.warmup_epochs) o.warmup_epochs = *g.warmup_epochs;
  if (g.lr_decay_epoch) o.decay_epoch = *g.lr_decay_epoch;
  if (g.lr_decay) o.decay = *g.lr_decay;
  if (g.grad_clip) o.grad_clip = *g.grad_clip;
  return o;
}

EngineOptions engine_options(const Config& config, const std::string& run_dir, c10::Device device, bool resume,
                             bool quiet) {
  const auto& t = config.train;
  EngineOptions e;
  e.run_dir = run_dir;
  e.device = device;
  e.epochs = t.epochs;
  e.batch_size = t.batch_size;
  e.seed = t.seed;
  e.optimizers[""] = optimizer_options(t);
  for (const auto& [name, group] : config.groups) e.optimizers[name] = with_group(e.optimizers[""], group);
  e.patience = t.patience;
  e.nonfinite = t.nonfinite;
  e.ema = t.ema;
  const auto every = parse_checkpoint_every(t.checkpoint_every);
  e.checkpoint_every_steps = every.steps;
  e.checkpoint_every_minutes = every.minutes;
  e.config_yaml = to_yaml(config);
  e.resume = resume;
  e.quiet = quiet;
  return e;
}

std::vector<std::shared_ptr<report::MetricsSink>> run_sinks(const std::string& run_dir, int64_t epochs, bool quiet,
                                                            std::shared_ptr<report::EventWriter>* events) {
  std::vector<std::shared_ptr<report::MetricsSink>> sinks;
  sinks.push_back(std::make_shared<report::JsonLinesSink>((fs::path(run_dir) / "metrics.jsonl").string()));
  auto writer = std::make_shared<report::EventWriter>((fs::path(run_dir) / "tensorboard").string());
  sinks.push_back(std::make_shared<report::TensorBoardSink>(writer));
  if (events) *events = writer;
  if (!quiet) sinks.push_back(std::make_shared<report::LogSink>(epochs));
  return sinks;
}

namespace {

/// `engine` after its groups were checked against `probe` (before anything is written).
EngineOptions checked(EngineOptions engine, nn::Trainable& probe) {
  check_groups(engine, probe);
  return engine;
}

}  // namespace

TrainingRun::TrainingRun(const Config& config, const RunOptions& options, const std::string& log_name,
                         nn::Trainable& probe, EngineOptions engine)
    : model_checkpoint_(config.train.model_checkpoint), options_(options), engine_(checked(std::move(engine), probe)) {
  engine_.ranks = options.ranks;
  if (options.ranks) options.ranks->require_same(to_yaml(config), "resolved configs (config file, --set, --seed)");
  if (writes_run_files(options.ranks.get())) {
    held_ = std::make_unique<RunDirectory>(options.run_dir, options.resume, options.force, log_name);
    if (options.resume)
      reconcile_resume_config(options.run_dir, config);
    else
      atomic_write_text(fs::path(options.run_dir) / "config.yml", to_yaml(config));
  }
  seed_everything(config.train.seed);
}

std::vector<std::shared_ptr<report::MetricsSink>> TrainingRun::sinks(
    int64_t epochs, std::shared_ptr<report::EventWriter>* events) const {
  if (!writes()) return {};
  return run_sinks(options_.run_dir, epochs, options_.quiet, events);
}

FitResult TrainingRun::fit(nn::Trainable& trainable, const TrainData& data,
                           std::vector<std::shared_ptr<report::MetricsSink>> sinks) {
  const auto result = Engine(engine_, std::move(sinks)).fit(trainable, data);
  model_epoch_ = load_weights(options_.run_dir, model_checkpoint_, trainable).epoch;
  return result;
}

}  // namespace pae::train
