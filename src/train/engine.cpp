#include "pae/train/engine.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "pae/train/fused_adam.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/progress.h"

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
  require(which == "best" || which == "last" || phase_end,
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

/// The engine's side of StepContext: steps named groups, sums named terms.
class EngineContext : public nn::StepContext {
 public:
  EngineContext(std::vector<Group>& groups, c10::Device device, std::string policy, std::string run_dir)
      : groups_(groups), device_(device), policy_(std::move(policy)), run_dir_(std::move(run_dir)) {}

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
    if (!finite(loss)) return nonfinite(*g, "loss", loss, parts);
    loss.backward();
    for (size_t i = 0; i < g->params.size(); ++i)
      if (g->had_grad[i] && !g->params[i].grad().defined())
        g->params[i].mutable_grad() = torch::zeros_like(g->params[i]);
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
  void begin_batch(int64_t size, int64_t global_step) {
    batch_size_ = size;
    global_step_ = global_step;
    skipped_batch_ = false;
  }
  /// Batch-size-weighted mean of each term over the batches that logged it (one sync each).
  nn::Terms means() const {
    nn::Terms out;
    for (const auto& [name, s] : sums_) out[name] = s.total.item<double>() / double(std::max<int64_t>(s.count, 1));
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
  int64_t nonfinite_steps_ = 0;
  bool skipped_batch_ = false;  // this batch had a skipped step: its terms are not counted
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

Engine::Engine(EngineOptions options, std::vector<std::shared_ptr<report::MetricsSink>> sinks)
    : options_(std::move(options)), sinks_(std::move(sinks)) {}

FitResult Engine::fit(nn::Trainable& trainable, const TrainData& data) {
  const auto& o = options_;
  require(data.size > 0, "training set is empty");
  // Parameter groups and their optimizers.
  std::vector<Group> groups;
  for (auto& [name, params] : trainable.parameter_groups()) {
    auto it = o.optimizers.find(name);
    if (it == o.optimizers.end()) it = o.optimizers.find("");
    if (it == o.optimizers.end()) throw std::logic_error("Engine: no optimizer options for group '" + name + "'");
    Group g{name, params, it->second, nullptr, 1.0, {}};
    g.optimizer = make_optimizer(g.options, g.params);
    groups.push_back(std::move(g));
  }
  OptimizerMap optimizers;
  for (auto& g : groups) optimizers[g.name] = g.optimizer.get();
  check_groups(o, trainable);

  const bool files = !o.run_dir.empty();
  const std::string last_path = files ? checkpoint_path(o.run_dir, "last") : "";
  const std::string best_path = files ? checkpoint_path(o.run_dir, "best") : "";
  // Polyak averaging: `averaged` follows the parameters; `raw` holds the training weights while the
  // averaged ones are swapped in (validation, checkpoints).
  require(o.ema >= 0 && o.ema < 1, "train.ema " + std::to_string(o.ema) + ": expected a decay in [0, 1)");
  auto params = trainable.module().parameters();
  std::vector<torch::Tensor> averaged, raw;
  auto save_extra = [&](torch::serialize::OutputArchive& a) {
    trainable.save_state(a);
    for (size_t i = 0; i < raw.size(); ++i) a.write("engine.raw_weights." + std::to_string(i), raw[i]);
  };
  auto load_extra = [&](torch::serialize::InputArchive& a) {
    trainable.load_state(a);
    if (o.ema <= 0) return;
    raw.clear();
    for (size_t i = 0; i < params.size(); ++i) {
      raw.push_back(torch::empty_like(params[i]));
      a.read("engine.raw_weights." + std::to_string(i), raw[i]);
    }
  };
  CheckpointState state;
  state.model_signature = trainable.signature();
  if (o.resume) {
    require(files, "resume needs a run directory");
    state = load_checkpoint(last_path, trainable.module(), optimizers, trainable.signature(), load_extra);
    for (auto& sink : sinks_) sink->on_resume(state.epoch);
    spdlog::info("resumed after epoch {} (phase {}, best {} at epoch {})", state.epoch, state.phase + 1,
                 std::isfinite(state.best) ? fmt::format("{:.6g}", state.best) : "none", state.best_epoch);
  }
  if (o.ema > 0) {
    torch::NoGradGuard no_grad;
    for (auto& p : params) averaged.push_back(p.detach().clone());  // a resumed run's were loaded as the model
    for (size_t i = 0; i < raw.size(); ++i) params[i].copy_(raw[i]);
    raw.clear();
  }
  if (files) ensure_dir(fs::path(o.run_dir) / "checkpoints");
  state.config_yaml = o.config_yaml;  // what the run continues under from here

  const auto phases = trainable.phases(o.epochs);
  int64_t total_epochs = 0;
  for (const auto& p : phases) total_epochs += p.epochs;
  const auto monitor = trainable.monitor();
  require(o.nonfinite == "stop" || o.nonfinite == "skip" || o.nonfinite == "reduce_lr",
          "train.nonfinite '" + o.nonfinite + "': expected stop, skip or reduce_lr");
  for (auto& g : groups)  // learning rates halved by earlier non-finite steps stay halved
    if (state.lr_scale.count(g.name)) g.lr_scale = state.lr_scale.at(g.name);
  EngineContext ctx(groups, o.device, o.nonfinite, o.run_dir);
  FitResult result;
  const int64_t n = data.size, batches = (n + o.batch_size - 1) / o.batch_size;

  while (state.phase < int64_t(phases.size())) {
    const auto& phase = phases[size_t(state.phase)];
    if (state.phase_stopped || state.epoch_in_phase >= phase.epochs) {
      if (state.phase + 1 >= int64_t(phases.size())) break;
      // The next phase starts afresh: its own best and patience.
      ++state.phase;
      state.epoch_in_phase = 0;
      state.phase_stopped = false;
      state.stale = 0;
      state.best = std::numeric_limits<double>::infinity();
      continue;
    }
    const int64_t epoch = state.epoch + 1;
    const std::string phase_label = phases.size() > 1 ? phase.name : "";
    std::vector<std::pair<std::string, double>> lrs;
    for (auto& g : groups) {
      const double lr = scheduled_lr(g.options, state.epoch_in_phase, phase.epochs) * g.lr_scale;
      set_lr(*g.optimizer, lr);
      lrs.emplace_back(groups.size() > 1 ? "lr_" + g.name : "lr", lr);
    }
    trainable.module().train();
    ctx.begin_epoch(phase.name, state.phase, epoch);
    const auto perm = epoch_permutation(n, o.seed, epoch);
    const int64_t phase_batches = phase.batches > 0 ? std::min(phase.batches, batches) : batches;
    Progress progress(fmt::format("epoch {}/{}", epoch, total_epochs), phase_batches, o.unit);
    int64_t items = 0;
    for (int64_t b = 0; b < phase_batches; ++b) {
      const auto idx = perm.slice(0, b * o.batch_size, std::min((b + 1) * o.batch_size, n));
      if (o.drop_singleton_batch && idx.size(0) < 2 && b > 0) break;
      const auto batch = data.batch(idx);
      ctx.begin_batch(batch.size(), state.global_step);
      trainable.train_step(batch, ctx);
      if (o.ema > 0) {
        torch::NoGradGuard no_grad;
        const double t = double(state.global_step), decay = std::min(o.ema, (1 + t) / (10 + t));
        for (size_t i = 0; i < params.size(); ++i) averaged[i].mul_(decay).add_(params[i].detach(), 1 - decay);
      }
      ++state.global_step;
      items += batch.size();
      if (!o.quiet) progress.update(1, batch.size(), [&] { return ctx.status(); });
    }
    if (!o.quiet) progress.finish();
    const double seconds = progress.elapsed_seconds();
    const auto train_terms = ctx.means();
    for (const auto& [name, v] : train_terms)
      require(std::isfinite(v),
              fmt::format("training diverged at epoch {}: {} is {} (lower the learning rate?)", epoch, name, v));
    if (o.ema > 0) {  // the averaged weights are the model from here to the checkpoints
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) {
        raw.push_back(params[i].detach().clone());
        params[i].copy_(averaged[i]);
      }
    }
    const auto val_terms =
        data.validation.x.defined() ? trainable.validate(data.validation, data.eval_batch_size) : nn::Terms{};

    double monitored;
    if (val_terms.count(monitor.name)) {
      monitored = val_terms.at(monitor.name);
    } else if (train_terms.count(monitor.name)) {
      monitored = train_terms.at(monitor.name);
    } else {
      throw std::logic_error("Engine: monitored term '" + monitor.name + "' was neither logged nor validated");
    }
    const double score = monitor.minimize ? monitored : -monitored;
    const bool improved = score < state.best;
    state.epoch = epoch;
    ++state.epoch_in_phase;
    if (improved) {
      state.best = score;
      state.best_epoch = epoch;
      state.stale = 0;
    } else {
      ++state.stale;
    }
    const int64_t patience = phase.patience >= 0 ? phase.patience : o.patience;
    if (patience > 0 && state.stale >= patience && state.epoch_in_phase < phase.epochs) {
      state.phase_stopped = true;
      spdlog::info("early stop{}: {} has not improved for {} epochs", phase_label.empty() ? "" : " of " + phase_label,
                   monitor.name, state.stale);
    }

    report::EpochRecord record;
    record.epoch = epoch;
    record.phase = phase_label;
    for (const auto& [k, v] : train_terms) record.values.emplace_back("train_" + k, v);
    for (const auto& [k, v] : val_terms) record.values.emplace_back("val_" + k, v);
    for (const auto& lr : lrs) record.values.push_back(lr);
    result.items_per_second = double(items) / std::max(seconds, 1e-9);
    record.values.emplace_back(o.rate_key, result.items_per_second);
    record.values.emplace_back("seconds", seconds);
    record.values.emplace_back("step", double(state.global_step));  // optimizer steps (batches) so far
    if (o.nonfinite != "stop") record.values.emplace_back("nonfinite_steps", double(ctx.nonfinite_steps()));
    for (const auto& g : groups)
      if (g.lr_scale != 1.0) state.lr_scale[g.name] = g.lr_scale;
    for (auto& sink : sinks_) sink->on_epoch(record);
    // best before last: last.pt is the commit point, and an epoch re-run after a kill between
    // the two writes the same best.pt again.
    if (files) {
      if (improved) save_checkpoint(best_path, trainable.module(), optimizers, state, save_extra);
      // The model as each phase of a multi-phase trainable leaves it (the NAE's phase-1 AE).
      if (phases.size() > 1 && (state.phase_stopped || state.epoch_in_phase >= phase.epochs))
        save_checkpoint(checkpoint_path(o.run_dir, "phase_" + phase.name), trainable.module(), optimizers, state,
                        save_extra);
      save_checkpoint(last_path, trainable.module(), optimizers, state, save_extra);
    }
    if (o.ema > 0) {  // training continues from the raw weights
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) params[i].copy_(raw[i]);
      raw.clear();
    }
    result.last = record;
  }
  result.state = state;
  return result;
}

}  // namespace pae::train
