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
#include "pae/util/run_state.h"
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
  for (const char* name :
       {"config.yml", "model.json", "train.log", "flow.log", "metrics.jsonl", "checkpoints", "latents", "latents.json",
        "log_prob", "recon.png", "samples.png", "summary.json", "classifier.pt", "classifier.json", "negatives",
        "residual_sigma", "tensorboard", "state.json"}) {
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
  if (fs::exists(source)) {
    const auto header = read_checkpoint_header(source);
    before = header.config_yaml;
    // The first phase (the only one but for the NAE's) lasts train.epochs.
    if (header.phase == 0 && config.train.epochs < header.epoch_in_phase)
      throw Error("--resume " + run_dir + ": train.epochs " + std::to_string(config.train.epochs) +
                  " is fewer than the " + std::to_string(header.epoch_in_phase) + " epochs the run has completed (" +
                  source + "); resume with train.epochs of at least " + std::to_string(header.epoch_in_phase) +
                  ", or start a new run");
  }
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
  lock_ = std::make_unique<FolderLock>(p, ".lock", "run directory", "wait for it to end or choose another --run-dir");
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
    throw Error("cannot open log file " + (p / log_name).string() + ": " + e.what());
  }
}

RunDirectory::~RunDirectory() {
  if (sink_) {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), std::static_pointer_cast<spdlog::sinks::sink>(sink_)),
                sinks.end());
  }
}

OptimizerOptions optimizer_options(const TrainOptions& t) {
  OptimizerOptions o;
  o.name = t.optimizer;
  o.lr = t.lr;
  o.weight_decay = t.weight_decay;
  o.momentum = t.momentum;
  o.schedule = t.lr_schedule;
  o.restart_epochs = t.lr_restart_epochs;
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
    write_run_state(options.run_dir, "running");
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
  FitResult result;
  try {
    result = Engine(engine_, std::move(sinks)).fit(trainable, data);
  } catch (const Stopped& e) {
    if (writes()) write_run_state(options_.run_dir, "stopped", e.what());
    state_recorded_ = true;
    throw;
  } catch (const std::exception& e) {
    if (writes()) write_run_state(options_.run_dir, "failed", first_line(e.what()));
    state_recorded_ = true;
    throw;
  }
  epochs_done_ = result.state.epoch;
  model_epoch_ = load_weights(options_.run_dir, model_checkpoint_, trainable).epoch;
  return result;
}

TrainingRun::~TrainingRun() {
  if (!held_ || state_recorded_) return;
  try {  // the run's outputs are written (or an error after training is on its way out)
    if (std::uncaught_exceptions() > 0)
      write_run_state(options_.run_dir, "failed", "an error after training: see the log", epochs_done_);
    else
      write_run_state(options_.run_dir, "finished", "", epochs_done_);
  } catch (const std::exception& e) {
    spdlog::error("{}: cannot record the run's state: {}", options_.run_dir, e.what());
  }
}

}  // namespace pae::train
