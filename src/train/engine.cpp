#include "pae/train/engine.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <random>
#include <tuple>

#include "pae/nn/sample_noise.h"
#include "pae/train/distributed.h"
#include "pae/train/fused_adam.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/progress.h"
#include "pae/util/runtime.h"

namespace pae::train {

at::Tensor epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::mt19937_64 rng(seed * 1000003ULL + uint64_t(epoch));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[size_t(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng() % uint64_t(i + 1))]);
  return torch::tensor(perm, torch::kInt64);
}

std::string checkpoint_path(const std::string& run_dir, const std::string& which) {
  const bool phase_end = which.rfind("phase_", 0) == 0 && which.size() > 6 &&
                         which.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
  require(which == "best" || which == "last" || which == "mid_epoch" || phase_end,
          "checkpoint '" + which + "': expected best, last or phase_<name> (the end of a training phase)");
  return (fs::path(run_dir) / "checkpoints" / (which + ".pt")).string();
}

CheckpointState load_weights(const std::string& run_dir, const std::string& which, nn::Trainable& trainable) {
  return load_checkpoint(checkpoint_path(run_dir, which), trainable.module(), {}, trainable.signature());
}

namespace {

struct Group {
  std::string name;
  std::vector<at::Tensor> params;
  OptimizerOptions options;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  double lr_scale = 1.0;       ///< halved by each non-finite step under train.nonfinite: reduce_lr
  std::vector<bool> had_grad;  ///< per parameter: a gradient was set at some step
};

/// How far the epoch in progress has come: what a checkpoint inside an epoch holds beyond the
/// weights, optimizers and RNG, so that a resumed run finishes the epoch as an uninterrupted one.
struct PartialEpoch {
  int64_t batches = 0;                                    ///< batches taken (0: at an epoch's start)
  int64_t items = 0;                                      ///< samples in them, every rank's
  int64_t nonfinite = 0;                                  ///< skipped steps among them
  std::map<std::string, std::pair<double, double>> sums;  ///< term -> (batch-size-weighted total, count)

  void save(torch::serialize::OutputArchive& a) const {
    a.write("engine.partial_epoch", torch::tensor({batches, items, nonfinite}, torch::kInt64));
    std::string names;  // the terms, one per line
    for (const auto& [term, sum] : sums) {
      names += (names.empty() ? "" : "\n") + term;
      a.write("engine.partial_epoch.sum." + term, torch::tensor({sum.first, sum.second}, torch::kFloat64));
    }
    a.write("engine.partial_epoch.terms",
            torch::tensor(std::vector<uint8_t>(names.begin(), names.end()), torch::kUInt8));
  }
  /// From a checkpoint (one written at an epoch's end holds none: all zero).
  void load(torch::serialize::InputArchive& a) {
    *this = {};
    at::Tensor t;
    if (!a.try_read("engine.partial_epoch", t)) return;
    t = t.to(torch::kCPU);
    require(t.numel() == 3,
            "checkpoint: engine.partial_epoch holds " + std::to_string(t.numel()) + " values, expected 3");
    batches = t[0].item<int64_t>();
    items = t[1].item<int64_t>();
    nonfinite = t[2].item<int64_t>();
    at::Tensor names;
    if (a.try_read("engine.partial_epoch.terms", names)) {
      const auto list = names.to(torch::kCPU).contiguous();
      const std::string all(static_cast<const char*>(list.data_ptr()), size_t(list.numel()));
      for (size_t start = 0; start < all.size();) {
        const auto end = std::min(all.find('\n', start), all.size());
        const auto term = all.substr(start, end - start);
        start = end + 1;
        at::Tensor v;
        require(a.try_read("engine.partial_epoch.sum." + term, v) && v.numel() == 2,
                "checkpoint: engine.partial_epoch.sum." + term + " missing");
        v = v.to(torch::kCPU);
        sums[term] = {v[0].item<double>(), v[1].item<double>()};
      }
    }
  }
};

/// The engine's side of StepContext: steps named groups, sums named terms.
class EngineContext : public nn::StepContext {
 public:
  EngineContext(std::vector<Group>& groups, c10::Device device, std::string policy, std::string run_dir,
                ProcessGroup* ranks)
      : groups_(groups), device_(device), policy_(std::move(policy)), run_dir_(std::move(run_dir)), ranks_(ranks) {}

  void step(const std::string& name, const at::Tensor& loss, const nn::TensorTerms& parts) override {
    Group* g = nullptr;
    for (auto& candidate : groups_)
      if (candidate.name == name) g = &candidate;
    if (!g) {
      std::string names;
      for (const auto& candidate : groups_) names += (names.empty() ? "" : ", ") + candidate.name;
      throw std::logic_error("StepContext::step: no parameter group '" + name + "' (groups: " + names + ")");
    }
    // Gradients are dropped rather than zeroed, so that backward hands over its new buffers (no
    // fill, no accumulation pass). A parameter that has had a gradient and that this loss does not
    // reach gets zeros back, as zero_grad leaves it in LibTorch 1.x (Adam still moves it).
    g->had_grad.resize(g->params.size(), false);
    for (size_t i = 0; i < g->params.size(); ++i) {
      auto& grad = g->params[i].mutable_grad();
      g->had_grad[i] = g->had_grad[i] || grad.defined();
      grad.reset();
    }
    const bool own_loss_finite = finite(loss);
    bool loss_finite = own_loss_finite;
    if (!loss_finite && !ranks_) return nonfinite(*g, "loss", loss, parts);
    loss.backward();  // with several ranks also a non-finite loss: every rank reduces the same tensors
    for (size_t i = 0; i < g->params.size(); ++i)
      if (g->had_grad[i] && !g->params[i].grad().defined())
        g->params[i].mutable_grad() = torch::zeros_like(g->params[i]);
    if (ranks_) loss_finite = reduce_gradients(*g, loss_finite);
    if (!loss_finite) return nonfinite(*g, own_loss_finite ? "loss on another rank" : "loss", loss, parts);
    if (!gradients_finite(g->params)) return nonfinite(*g, "gradient", loss, parts);
    if (g->options.grad_clip > 0) torch::nn::utils::clip_grad_norm_(g->params, g->options.grad_clip);
    g->optimizer->step();
  }

  int64_t nonfinite_steps() const { return nonfinite_steps_; }

  void log(const std::string& term, const at::Tensor& value) override {
    if (skipped_batch_) return;
    auto v = value.detach();
    auto it = sums_.find(term);
    if (it == sums_.end()) it = sums_.emplace(term, Sum{torch::zeros({}, v.options().dtype(torch::kFloat64)), 0}).first;
    it->second.total += v.to(torch::kFloat64) * double(batch_size_);
    it->second.count += batch_size_;
    last_[term] = v;
  }

  const std::string& phase() const override { return phase_; }
  int64_t phase_index() const override { return phase_index_; }
  int64_t epoch() const override { return epoch_; }
  int64_t global_step() const override { return global_step_; }
  c10::Device device() const override { return device_; }

  void begin_epoch(const std::string& phase, int64_t phase_index, int64_t epoch) {
    phase_ = phase;
    phase_index_ = phase_index;
    epoch_ = epoch;
    sums_.clear();
    last_.clear();
    nonfinite_steps_ = 0;
  }
  /// A batch of `size` samples, this rank's part of `global_size` (every rank's together);
  /// `checkpoint_wanted`: this rank's vote for a checkpoint after it (see votes()).
  void begin_batch(int64_t size, int64_t global_size, int64_t global_step, bool checkpoint_wanted) {
    batch_size_ = size;
    share_ = double(size) / double(global_size);
    global_step_ = global_step;
    skipped_batch_ = false;
    checkpoint_wanted_ = checkpoint_wanted;
    stop_voted_ = checkpoint_voted_ = false;
  }
  /// After a batch with several ranks: whether any rank had a stop signal, and whether any wanted
  /// a checkpoint, when they last reduced gradients (the same answer on every rank).
  std::pair<bool, bool> votes() const { return {stop_voted_, checkpoint_voted_}; }
  /// The epoch's sums so far: this rank's, or with `every_rank` every rank's (a collective).
  PartialEpoch partial(bool every_rank) const {
    PartialEpoch p;
    p.nonfinite = nonfinite_steps_;
    std::vector<double> totals, counts;
    for (const auto& [name, sum] : sums_) {
      totals.push_back(sum.total.item<double>());
      counts.push_back(double(sum.count));
    }
    if (every_rank && ranks_ && !totals.empty()) reduce(totals, counts);
    size_t i = 0;
    for (const auto& [name, sum] : sums_) p.sums[name] = {totals[i], counts[i]}, ++i;
    return p;
  }
  /// Continues an epoch from a checkpoint's sums (on one rank: the others start from zero).
  void restore(const PartialEpoch& p) {
    nonfinite_steps_ = p.nonfinite;
    for (const auto& [name, sum] : p.sums)
      sums_[name] =
          Sum{torch::full({}, sum.first, torch::TensorOptions(torch::kFloat64).device(device_)), int64_t(sum.second)};
  }
  /// Batch-size-weighted mean of each term over the batches that logged it (one sync each), over
  /// every rank's batches.
  nn::Terms means() const {
    std::vector<double> totals, counts;
    for (const auto& [name, s] : sums_) {
      totals.push_back(s.total.item<double>());
      counts.push_back(double(s.count));
    }
    if (ranks_ && !totals.empty()) reduce(totals, counts);
    nn::Terms out;
    size_t i = 0;
    for (const auto& [name, s] : sums_) {
      out[name] = totals[i] / std::max(counts[i], 1.0);
      ++i;
    }
    return out;
  }
  /// "loss 0.0123" from the last batch (when a progress line is drawn).
  std::string status() const {
    if (last_.empty()) return "";
    auto it = last_.find("loss");
    if (it == last_.end()) it = last_.begin();
    return fmt::format("{} {:.4g}", it->first, it->second.item<double>());
  }

 private:
  static bool finite(const at::Tensor& t) { return torch::isfinite(t.detach()).all().item<bool>(); }
  /// Sums over the ranks, in place.
  void reduce(std::vector<double>& totals, std::vector<double>& counts) const {
    auto t = torch::tensor(totals, torch::kFloat64), c = torch::tensor(counts, torch::kFloat64);
    ranks_->allreduce_sum({t, c});
    for (size_t i = 0; i < totals.size(); ++i) {
      totals[i] = t[int64_t(i)].item<double>();
      counts[i] = c[int64_t(i)].item<double>();
    }
  }
  /// Every rank's gradients of the group, each weighted by its share of the global batch, summed:
  /// the gradient of the global batch's mean loss, the same on every rank (one all-reduce, with a
  /// flag of the ranks whose loss was not finite). Whether every rank's loss was finite.
  bool reduce_gradients(Group& g, bool loss_finite) {
    std::vector<at::Tensor> grads;
    for (auto& p : g.params)
      if (p.grad().defined()) grads.push_back(p.mutable_grad().mul_(share_));
    // The flags in the gradients' dtype and device: one bucket, one collective. Beside the
    // non-finite flag, each rank's vote to stop (a signal) and to checkpoint (rank 0's clock):
    // every rank reads the same sums, so every rank stops or checkpoints at the same step.
    const auto options = grads.empty() ? torch::TensorOptions(torch::kFloat64) : grads.front().options();
    auto flags =
        torch::tensor({loss_finite ? 0.0 : 1.0, stop_signal() != 0 ? 1.0 : 0.0, checkpoint_wanted_ ? 1.0 : 0.0},
                      options.dtype(torch::kFloat64))
            .to(options);
    grads.push_back(flags);
    ranks_->allreduce_sum(grads);
    const auto sums = flags.to(torch::kCPU, torch::kFloat64);
    stop_voted_ = stop_voted_ || sums[1].item<double>() > 0;
    checkpoint_voted_ = checkpoint_voted_ || sums[2].item<double>() > 0;
    return sums[0].item<double>() == 0;
  }
  /// A step that cannot be taken: skipped and counted (halving the group's learning rate under
  /// reduce_lr), or an error; either way the message names the epoch, step, group and term.
  void nonfinite(Group& g, const char* what, const at::Tensor& loss, const nn::TensorTerms& parts) {
    g.optimizer->zero_grad();
    const auto value = loss.detach().to(torch::kCPU, torch::kFloat64);
    std::string bad;  // the loss's named parts that are not finite
    for (const auto& [term, v] : parts)
      if (v.defined() && v.numel() == 1 && !finite(v))
        bad += fmt::format("{}{} = {}", bad.empty() ? "" : ", ", term, v.detach().to(torch::kCPU).item<double>());
    const std::string where = fmt::format(
        "epoch {}, step {}: the {} of parameter group '{}' is not finite (loss {}{})", epoch_, global_step_ + 1, what,
        g.name, value.numel() == 1 ? fmt::format("{}", value.item<double>()) : "?", bad.empty() ? "" : "; " + bad);
    if (policy_ != "stop") {
      ++nonfinite_steps_;
      skipped_batch_ = true;
      if (policy_ == "reduce_lr") {
        g.lr_scale *= 0.5;
        const double lr = get_lr(*g.optimizer) * 0.5;
        set_lr(*g.optimizer, lr);
        spdlog::warn("{}; step skipped, learning rate of '{}' halved to {:.4g} (train.nonfinite: reduce_lr)", where,
                     g.name, lr);
      }
      return;
    }
    const auto last = fs::path(run_dir_) / "checkpoints" / "last.pt";
    throw Error(fmt::format(
        "{}; stopped before the update (train.nonfinite: stop).{} Lower the learning rate (train.lr, groups.{}.lr) "
        "and --resume, or set train.nonfinite: skip or reduce_lr",
        where, fs::exists(last) ? " The last checkpoint, " + last.string() + ", is intact." : "", g.name));
  }

  struct Sum {
    at::Tensor total;
    int64_t count;
  };
  std::vector<Group>& groups_;
  c10::Device device_;
  std::string policy_;  // train.nonfinite: stop, skip or reduce_lr
  std::string run_dir_;
  ProcessGroup* ranks_;  // null: a single process
  double share_ = 1;     // this rank's share of the batch
  int64_t nonfinite_steps_ = 0;
  bool skipped_batch_ = false;  // this batch had a skipped step: its terms are not counted
  bool checkpoint_wanted_ = false, stop_voted_ = false, checkpoint_voted_ = false;  // see votes()
  std::string phase_;
  int64_t phase_index_ = 0, epoch_ = 0, global_step_ = 0, batch_size_ = 0;
  std::map<std::string, Sum> sums_;
  std::map<std::string, at::Tensor> last_;
};

}  // namespace

void check_groups(const EngineOptions& options, nn::Trainable& trainable) {
  std::vector<std::string> names;
  for (const auto& [name, params] : trainable.parameter_groups()) names.push_back(name);
  for (const auto& [name, optimizer] : options.optimizers) {
    if (name.empty() || std::find(names.begin(), names.end(), name) != names.end()) continue;
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    throw Error("groups." + name + ": " + trainable.signature() + " has no parameter group '" + name +
                "' (its groups: " + list + ")");
  }
}

namespace {

/// Polyak averaging: `averaged` follows the parameters step by step; for validation and the
/// checkpoints the averaged weights are swapped in and the raw ones training continues from are
/// kept aside (and saved beside them, for resume).
class Averaging {
 public:
  Averaging(double decay, std::vector<at::Tensor> params) : decay_(decay), params_(std::move(params)) {
    require(decay_ >= 0 && decay_ < 1, "train.ema " + std::to_string(decay_) + ": expected a decay in [0, 1)");
  }
  bool active() const { return decay_ > 0; }
  /// Starts averaging from the parameters as they are (a resumed run's are the averaged ones it
  /// saved), then puts back the raw weights a resumed checkpoint held.
  void start() {
    if (!active()) return;
    torch::NoGradGuard no_grad;
    for (auto& p : params_) averaged_.push_back(p.detach().clone());
    for (size_t i = 0; i < raw_.size(); ++i) params_[i].copy_(raw_[i]);
    raw_.clear();
  }
  /// After optimizer step t: averaged = d averaged + (1 - d) params, d = min(decay, (1 + t) / (10 + t)).
  void update(int64_t step) {
    if (!active()) return;
    torch::NoGradGuard no_grad;
    const double t = double(step), d = std::min(decay_, (1 + t) / (10 + t));
    for (size_t i = 0; i < params_.size(); ++i) averaged_[i].mul_(d).add_(params_[i].detach(), 1 - d);
  }
  void swap_in() {
    if (!active()) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      raw_.push_back(params_[i].detach().clone());
      params_[i].copy_(averaged_[i]);
    }
  }
  void swap_out() {
    if (!active()) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) params_[i].copy_(raw_[i]);
    raw_.clear();
  }
  void save(torch::serialize::OutputArchive& a) const {
    for (size_t i = 0; i < raw_.size(); ++i) a.write("engine.raw_weights." + std::to_string(i), raw_[i]);
  }
  void load(torch::serialize::InputArchive& a) {
    if (!active()) return;
    raw_.clear();
    for (size_t i = 0; i < params_.size(); ++i) {
      raw_.push_back(torch::empty_like(params_[i]));
      a.read("engine.raw_weights." + std::to_string(i), raw_[i]);
    }
  }

 private:
  double decay_;
  std::vector<at::Tensor> params_, averaged_, raw_;
};

}  // namespace

/// One fit in progress: what its steps (set-up, epoch, end of epoch) share.
struct Engine::Fit {
  Fit(nn::Trainable& t, const TrainData& d, double ema)
      : trainable(t), data(d), averaging(ema, t.module().parameters()) {}
  nn::Trainable& trainable;
  const TrainData& data;
  std::vector<Group> groups;
  OptimizerMap optimizers;
  Averaging averaging;
  std::vector<nn::Phase> phases;
  int64_t total_epochs = 0;
  nn::Monitor monitor;
  CheckpointState state;
  std::unique_ptr<EngineContext> ctx;
  std::vector<std::pair<std::string, double>> lrs;  ///< this epoch's, per group
  int64_t epoch_items = 0;
  double epoch_seconds = 0;
  PartialEpoch partial;  ///< where a mid-epoch checkpoint left the epoch in progress
  std::chrono::steady_clock::time_point last_checkpoint = std::chrono::steady_clock::now();
  FitResult result;
};

Engine::Engine(EngineOptions options, std::vector<std::shared_ptr<report::MetricsSink>> sinks)
    : options_(std::move(options)), sinks_(std::move(sinks)) {}

Engine::~Engine() = default;

FitResult Engine::fit(nn::Trainable& trainable, const TrainData& data) {
  require(data.size > 0, "training set is empty");
  check_memory_headroom();  // under `ulimit -v`: refused now, not a crash in the BLAS mid-run
  Fit f(trainable, data, options_.ema);
  set_up(f);
  const auto started = std::chrono::steady_clock::now();
  while (next_epoch(f)) end_epoch(f, train_epoch(f));
  check_a_best_model(f);
  if (options_.ranks) {
    options_.ranks->barrier();  // rank 0's checkpoints are written before any rank reads them
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const auto& r = *options_.ranks;
    spdlog::info("{} ranks: {:.3g} MB all-reduced in {} collectives; {:.1f}% of this rank's {:.1f} s in them", r.size(),
                 double(r.bytes_reduced()) / 1e6, r.collectives(), 100 * r.seconds_in_collectives() / seconds, seconds);
  }
  f.result.state = f.state;
  return f.result;
}

void Engine::check_a_best_model(const Fit& f) const {
  if (std::isfinite(f.state.best) || f.state.epoch_in_phase == 0) return;  // 0: an empty last phase
  const auto& phase = f.phases[size_t(std::min<int64_t>(f.state.phase, int64_t(f.phases.size()) - 1))];
  std::string last = "none";
  for (const auto& [key, value] : f.result.last.values)
    if (key == "val_" + f.monitor.name || (last == "none" && key == "train_" + f.monitor.name))
      last = fmt::format("{}", value);
  throw Error(fmt::format(
      "training diverged: no epoch{} ended with a finite {} (the last: {}), so there is no best model to keep{}; "
      "lower the learning rate and run again (another --run-dir, or --force)",
      f.phases.size() > 1 ? " of phase " + phase.name : "", f.monitor.name, last,
      options_.nonfinite == "stop"
          ? ""
          : " (train.nonfinite: " + options_.nonfinite +
                " skips non-finite steps but cannot mend weights that are already non-finite)"));
}

void Engine::average_buffers(Fit& f) {
  // Batch norm's running statistics are each rank's own during the epoch (its part of each
  // batch); their mean over the ranks is every rank's model from here (validation, checkpoints).
  std::vector<at::Tensor> buffers;
  for (const auto& b : f.trainable.module().buffers())
    if (b.is_floating_point()) buffers.push_back(b);
  if (buffers.empty()) return;
  options_.ranks->allreduce_sum(buffers);
  torch::NoGradGuard no_grad;
  for (auto& b : buffers) b.div_(options_.ranks->size());
}

bool Engine::writes() const { return writes_run_files(options_.ranks.get()); }

std::pair<int64_t, int64_t> Engine::rank_rows(int64_t m) const {
  if (!options_.ranks) return {0, m};
  const int64_t w = options_.ranks->size(), r = options_.ranks->rank();
  if (m < w) return {0, 0};
  return {r * m / w, (r + 1) * m / w};
}

nn::Terms Engine::validation(Fit& f) {
  if (!f.data.validation.x.defined()) return {};
  nn::Terms terms;
  {
    nn::SampleNoiseScope noise(options_.seed, -1, 0, 0);  // every epoch's validation draws the same noise
    terms = f.trainable.validate(f.data.validation, f.data.eval_batch_size);
  }
  if (!options_.ranks || terms.empty()) return terms;
  // Rank 0's numbers on every rank (dropout or other draws outside the scope differ between
  // ranks): the same best epoch and early stop everywhere.
  std::vector<double> values;
  for (const auto& [name, v] : terms) values.push_back(v);
  auto t = torch::tensor(values, torch::kFloat64);
  options_.ranks->broadcast({t});
  size_t i = 0;
  for (auto& [name, v] : terms) v = t[int64_t(i++)].item<double>();
  return terms;
}

std::string Engine::checkpoint(const std::string& which) const { return checkpoint_path(options_.run_dir, which); }

void Engine::set_up(Fit& f) {
  const auto& o = options_;
  for (auto& [name, params] : f.trainable.parameter_groups()) {
    auto it = o.optimizers.find(name);
    if (it == o.optimizers.end()) it = o.optimizers.find("");
    if (it == o.optimizers.end()) throw std::logic_error("Engine: no optimizer options for group '" + name + "'");
    Group g{name, params, it->second, nullptr, 1.0, {}};
    g.optimizer = make_optimizer(g.options, g.params);
    f.groups.push_back(std::move(g));
  }
  for (auto& g : f.groups) f.optimizers[g.name] = g.optimizer.get();
  check_groups(o, f.trainable);
  f.state.model_signature = f.trainable.signature();
  if (o.resume) resume(f);
  if (o.ranks) start_ranks(f);  // before averaging starts from the weights
  f.averaging.start();
  if (!o.run_dir.empty() && writes()) ensure_dir(fs::path(o.run_dir) / "checkpoints");
  f.state.config_yaml = o.config_yaml;  // what the run continues under from here
  f.phases = f.trainable.phases(o.epochs);
  for (const auto& p : f.phases) f.total_epochs += p.epochs;
  f.monitor = f.trainable.monitor();
  require(o.nonfinite == "stop" || o.nonfinite == "skip" || o.nonfinite == "reduce_lr",
          "train.nonfinite '" + o.nonfinite + "': expected stop, skip or reduce_lr");
  for (auto& g : f.groups)  // learning rates halved by earlier non-finite steps stay halved
    if (f.state.lr_scale.count(g.name)) g.lr_scale = f.state.lr_scale.at(g.name);
  f.ctx = std::make_unique<EngineContext>(f.groups, o.device, o.nonfinite, o.run_dir, o.ranks.get());
}

void Engine::resume(Fit& f) {
  require(!options_.run_dir.empty(), "resume needs a run directory");
  std::string path = checkpoint("mid_epoch");  // newer than last.pt whenever it is there
  if (!fs::exists(path)) path = checkpoint("last");
  if (!fs::exists(path)) {
    spdlog::warn("--resume: {} holds no checkpoint (the run stopped before its first): starting from scratch",
                 (fs::path(options_.run_dir) / "checkpoints").string());
    for (auto& sink : sinks_) sink->on_resume(0);
    return;
  }
  f.state = load_checkpoint(path, f.trainable.module(), f.optimizers, f.trainable.signature(),
                            [&](torch::serialize::InputArchive& a) {
                              f.trainable.load_state(a);
                              f.averaging.load(a);
                              f.partial.load(a);
                            });
  for (auto& sink : sinks_) sink->on_resume(f.state.epoch);
  spdlog::info(
      "resumed after epoch {}{} (phase {}, best {} at epoch {})", f.state.epoch,
      f.partial.batches > 0 ? fmt::format(" and {} batches of epoch {}", f.partial.batches, f.state.epoch + 1) : "",
      f.state.phase + 1, std::isfinite(f.state.best) ? fmt::format("{:.6g}", f.state.best) : "none",
      f.state.best_epoch);
}

void Engine::start_ranks(Fit& f) {
  const auto& ranks = *options_.ranks;
  require(f.data.size >= ranks.size(), "training set of " + std::to_string(f.data.size) + " samples for " +
                                           std::to_string(ranks.size()) + " ranks: each needs at least one");
  // Every rank starts from rank 0's weights. Noise per sample comes from the step's generator
  // (nn::SampleNoiseScope); dropout and augmentation from each rank's own stream, seeded from
  // (seed, rank, epoch): rank 0's is the single process's.
  std::vector<at::Tensor> weights = f.trainable.module().parameters();
  for (const auto& b : f.trainable.module().buffers()) weights.push_back(b);
  options_.ranks->broadcast(weights);
  if (ranks.rank() > 0)
    seed_everything(options_.seed * 1000003ULL + uint64_t(ranks.rank()) * 7919ULL + uint64_t(f.state.epoch));
}

bool Engine::next_epoch(Fit& f) {
  auto& s = f.state;
  while (s.phase < int64_t(f.phases.size())) {
    const auto& phase = f.phases[size_t(s.phase)];
    if (!s.phase_stopped && s.epoch_in_phase < phase.epochs) return true;
    if (s.phase + 1 >= int64_t(f.phases.size())) return false;
    // The next phase starts afresh: its own best and patience.
    ++s.phase;
    s.epoch_in_phase = 0;
    s.phase_stopped = false;
    s.stale = 0;
    s.best = std::numeric_limits<double>::infinity();
  }
  return false;
}

nn::Terms Engine::train_epoch(Fit& f) {
  const auto& o = options_;
  const auto& phase = f.phases[size_t(f.state.phase)];
  const int64_t epoch = f.state.epoch + 1;
  f.lrs.clear();
  for (auto& g : f.groups) {
    const double lr = scheduled_lr(g.options, f.state.epoch_in_phase, phase.epochs) * g.lr_scale;
    set_lr(*g.optimizer, lr);
    f.lrs.emplace_back(f.groups.size() > 1 ? "lr_" + g.name : "lr", lr);
  }
  f.trainable.module().train();
  f.ctx->begin_epoch(phase.name, f.state.phase, epoch);
  const int64_t n = f.data.size, batches = (n + o.batch_size - 1) / o.batch_size;
  const auto perm = epoch_permutation(n, o.seed, epoch);
  const int64_t phase_batches = phase.batches > 0 ? std::min(phase.batches, batches) : batches;
  // A resumed mid-epoch checkpoint: its batches are done, its sums are the epoch's so far (on
  // one rank; the checkpoint holds every rank's together).
  const int64_t done = f.partial.batches;
  if (options_.ranks && options_.ranks->rank() > 0) f.partial.sums.clear();
  f.ctx->restore(f.partial);
  f.epoch_items = f.partial.items;
  f.partial = {};
  Progress progress(fmt::format("epoch {}/{}", epoch, f.total_epochs), phase_batches - done, o.unit);
  for (int64_t b = done; b < phase_batches; ++b) {
    const auto global = perm.slice(0, b * o.batch_size, std::min((b + 1) * o.batch_size, n));
    if (o.drop_singleton_batch && global.size(0) < 2 && b > 0) break;
    const auto [first, last] = rank_rows(global.size(0));
    if (first == last) break;  // a last batch with fewer samples than ranks
    const auto batch = f.data.batch(global.slice(0, first, last));
    f.ctx->begin_batch(batch.size(), global.size(0), f.state.global_step, checkpoint_due(f, f.state.global_step + 1));
    {
      nn::SampleNoiseScope noise(o.seed, f.state.global_step, first, global.size(0));
      f.trainable.train_step(batch, *f.ctx);
    }
    f.averaging.update(f.state.global_step);
    ++f.state.global_step;
    f.epoch_items += global.size(0);
    if (!o.quiet) progress.update(1, batch.size(), [&] { return f.ctx->status(); });
    after_batch(f, b + 1, phase_batches);
  }
  if (!o.quiet) progress.finish();
  f.epoch_seconds = progress.elapsed_seconds();
  const auto terms = f.ctx->means();
  for (const auto& [name, v] : terms)
    require(std::isfinite(v),
            fmt::format("training diverged at epoch {}: {} is {} (lower the learning rate?)", epoch, name, v));
  return terms;
}

void Engine::end_epoch(Fit& f, const nn::Terms& train_terms) {
  if (options_.ranks) average_buffers(f);
  f.averaging.swap_in();  // the averaged weights are the model from here to the checkpoints
  const auto val_terms = validation(f);
  const bool improved = update_progress(f, train_terms, val_terms);
  const auto record = epoch_record(f, train_terms, val_terms);
  for (auto& sink : sinks_) sink->on_epoch(record);
  if (!options_.run_dir.empty() && writes()) write_checkpoints(f, improved);
  f.averaging.swap_out();  // training continues from the raw weights
  f.result.last = record;
}

bool Engine::update_progress(Fit& f, const nn::Terms& train_terms, const nn::Terms& val_terms) {
  auto& s = f.state;
  const auto& phase = f.phases[size_t(s.phase)];
  const auto& name = f.monitor.name;
  double monitored;
  if (val_terms.count(name)) {
    monitored = val_terms.at(name);
  } else if (train_terms.count(name)) {
    monitored = train_terms.at(name);
  } else {
    throw std::logic_error("Engine: monitored term '" + name + "' was neither logged nor validated");
  }
  const double score = f.monitor.minimize ? monitored : -monitored;
  const bool improved = score < s.best;
  ++s.epoch;
  ++s.epoch_in_phase;
  if (improved) {
    s.best = score;
    s.best_epoch = s.epoch;
    s.stale = 0;
  } else {
    ++s.stale;
  }
  const int64_t patience = phase.patience >= 0 ? phase.patience : options_.patience;
  if (patience > 0 && s.stale >= patience && s.epoch_in_phase < phase.epochs) {
    s.phase_stopped = true;
    spdlog::info("early stop{}: {} has not improved for {} epochs", f.phases.size() > 1 ? " of " + phase.name : "",
                 name, s.stale);
  }
  for (const auto& g : f.groups)
    if (g.lr_scale != 1.0) s.lr_scale[g.name] = g.lr_scale;
  return improved;
}

report::EpochRecord Engine::epoch_record(Fit& f, const nn::Terms& train_terms, const nn::Terms& val_terms) {
  report::EpochRecord record;
  record.epoch = f.state.epoch;
  record.phase = f.phases.size() > 1 ? f.phases[size_t(f.state.phase)].name : "";
  for (const auto& [k, v] : train_terms) record.values.emplace_back("train_" + k, v);
  for (const auto& [k, v] : val_terms) record.values.emplace_back("val_" + k, v);
  for (const auto& lr : f.lrs) record.values.push_back(lr);
  f.result.items_per_second = double(f.epoch_items) / std::max(f.epoch_seconds, 1e-9);
  record.values.emplace_back(options_.rate_key, f.result.items_per_second);
  record.values.emplace_back("seconds", f.epoch_seconds);
  record.values.emplace_back("step", double(f.state.global_step));  // optimizer steps (batches) so far
  if (options_.nonfinite != "stop") record.values.emplace_back("nonfinite_steps", double(f.ctx->nonfinite_steps()));
  return record;
}

bool Engine::checkpoint_due(const Fit& f, int64_t step) const {
  const auto& o = options_;
  if (o.checkpoint_every_steps > 0 && step % o.checkpoint_every_steps == 0) return true;
  const double minutes =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - f.last_checkpoint).count() / 60;
  return o.checkpoint_every_minutes > 0 && minutes >= o.checkpoint_every_minutes;
}

void Engine::after_batch(Fit& f, int64_t batches_done, int64_t batches) {
  bool stop = stop_signal() != 0, save = checkpoint_due(f, f.state.global_step);
  if (options_.ranks) std::tie(stop, save) = f.ctx->votes();  // every rank's, the same everywhere
  if (!stop && (!save || batches_done >= batches)) return;    // the epoch's end checkpoints next anyway
  write_mid_epoch(f, batches_done);
  if (!stop) return;
  const int signal = stop_signal() != 0 ? stop_signal() : SIGTERM;  // with ranks: maybe another rank's
  std::string where = "stopped (no run directory to checkpoint to)";
  if (!options_.run_dir.empty())
    where = writes() ? "the state is in " + checkpoint("mid_epoch") + "; --resume continues from there"
                     : "rank 0 writes the state to " + checkpoint("mid_epoch");
  throw Stopped(fmt::format("{}{} at epoch {}, batch {} of {} (step {}): {}", signal_name(signal),
                            stop_signal() != 0 ? "" : " (another rank's)", f.state.epoch + 1, batches_done, batches,
                            f.state.global_step, where),
                stop_exit_code(signal));
}

void Engine::write_mid_epoch(Fit& f, int64_t batches_done) {
  f.last_checkpoint = std::chrono::steady_clock::now();
  if (options_.run_dir.empty()) return;
  PartialEpoch partial = f.ctx->partial(true);  // with ranks a collective: every rank calls it
  partial.batches = batches_done;
  partial.items = f.epoch_items;
  if (!writes()) return;
  for (const auto& g : f.groups)
    if (g.lr_scale != 1.0) f.state.lr_scale[g.name] = g.lr_scale;
  f.averaging.swap_in();  // the layout of an epoch's end: averaged weights, the raw ones beside
  save_checkpoint(checkpoint("mid_epoch"), f.trainable.module(), f.optimizers, f.state,
                  [&](torch::serialize::OutputArchive& a) {
                    f.trainable.save_state(a);
                    f.averaging.save(a);
                    partial.save(a);
                  });
  f.averaging.swap_out();
}

void Engine::write_checkpoints(Fit& f, bool improved) {
  const auto save_extra = [&](torch::serialize::OutputArchive& a) {
    f.trainable.save_state(a);
    f.averaging.save(a);
  };
  const auto save = [&](const std::string& which) {
    save_checkpoint(checkpoint(which), f.trainable.module(), f.optimizers, f.state, save_extra);
  };
  // The mid-epoch checkpoint goes first: a kill before last.pt is written then re-runs the epoch
  // from the last epoch's end. best before last: last.pt is the commit point, and an epoch re-run
  // after a kill between the two writes the same best.pt again.
  std::error_code ignored;
  fs::remove(checkpoint("mid_epoch"), ignored);
  if (improved) save("best");
  // The model as each phase of a multi-phase trainable leaves it (the NAE's phase-1 AE).
  const auto& phase = f.phases[size_t(f.state.phase)];
  if (f.phases.size() > 1 && (f.state.phase_stopped || f.state.epoch_in_phase >= phase.epochs))
    save("phase_" + phase.name);
  save("last");
}

}  // namespace pae::train
