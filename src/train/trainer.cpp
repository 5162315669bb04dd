#include "pae/train/trainer.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <random>
#include <set>

#include "pae/data/npy.h"
#include "pae/models/autoencoder.h"
#include "pae/train/checkpoint.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/image.h"
#include "pae/util/json.h"
#include "pae/util/progress.h"
#include "pae/util/runtime.h"

namespace pae::train {

using models::AutoEncoder;

void prepare_run_dir(const std::string& dir, bool resume, bool force) {
  require(!dir.empty(), "--run-dir must not be empty");
  const fs::path p(dir);
  const bool exists = fs::exists(p);
  require(!exists || fs::is_directory(p), "run directory " + dir + " exists and is not a directory");
  const bool non_empty = exists && fs::directory_iterator(p) != fs::directory_iterator();
  if (resume) {
    require(fs::is_regular_file(p / "checkpoints" / "last.pt"),
            "--resume: " + (p / "checkpoints" / "last.pt").string() + " not found; nothing to resume");
  } else if (non_empty) {
    require(force, "run directory " + dir + " already exists; pass --resume to continue it or --force to replace it");
    // Remove only what a run writes; anything else the user put there stays.
    for (const char* name : {"config.yml", "train.log", "flow.log", "metrics.jsonl", "checkpoints", "latents",
                             "latents.json", "log_prob", "recon.png", "samples.png", "summary.json",
                             "classifier.pt", "classifier.json"}) {
      std::error_code ec;
      fs::remove_all(p / name, ec);
      require(!ec, "--force: cannot remove " + (p / name).string() + ": " + ec.message());
    }
  }
  ensure_dir(p);
}

void log_to_file(const std::string& path) {
  static std::set<std::string> attached;
  if (!attached.insert(path).second) return;
  try {
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
    sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
    spdlog::default_logger()->sinks().push_back(sink);
  } catch (const spdlog::spdlog_ex& e) {
    throw Error("cannot open log file " + path + ": " + e.what());
  }
}

std::shared_ptr<models::AutoEncoder> load_autoencoder(const std::string& run_dir, Config* config_out,
                                                      const std::string& which) {
  const fs::path dir(run_dir);
  require(fs::is_directory(dir), "auto-encoder run directory not found: " + run_dir);
  Config config = load_config((dir / "config.yml").string());
  auto shape = models::known_image_shape(config.data);
  if (shape.channels == 0) {
    const auto test = data::load_dataset(config.data, data::Split::kTest);
    shape = {test.images.size(1), test.images.size(2), test.images.size(3)};
  }
  auto model = models::build_autoencoder(config.model, shape);
  load_checkpoint((dir / "checkpoints" / (which + ".pt")).string(), *model, nullptr,
                  model_signature(config.model, shape.sizes()));
  model->eval();
  if (config_out) *config_out = config;
  return model;
}

std::string model_signature(const ModelOptions& m, const std::vector<int64_t>& shape) {
  std::string s = m.type + "/" + m.arch + "/z" + std::to_string(m.latent_dim) + "/";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

namespace {

}  // namespace

torch::Tensor epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::mt19937_64 rng(seed * 1000003ULL + uint64_t(epoch));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[size_t(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng() % uint64_t(i + 1))]);
  return torch::tensor(perm, torch::kInt64);
}

namespace {

/// Sums of batch-mean terms weighted by batch size, read back once per epoch.
struct TermAccumulator {
  std::vector<std::string> names;
  std::vector<torch::Tensor> sums;
  int64_t count = 0;
  void add(const models::LossTerms& t, int64_t batch) {
    if (names.empty())
      for (const auto& kv : t.terms) {
        names.push_back(kv.first);
        sums.push_back(torch::zeros({}, kv.second.options().dtype(torch::kFloat64)));
      }
    for (size_t i = 0; i < t.terms.size(); ++i) sums[i] += t.terms[i].second.to(torch::kFloat64) * double(batch);
    count += batch;
  }
  std::map<std::string, double> means() const {
    std::map<std::string, double> out;
    for (size_t i = 0; i < names.size(); ++i) out[names[i]] = sums[i].item<double>() / double(std::max<int64_t>(count, 1));
    return out;
  }
};

std::map<std::string, double> evaluate(AutoEncoder& model, const data::Dataset& d, int64_t batch, torch::Device device) {
  torch::NoGradGuard no_grad;
  model.eval();
  TermAccumulator acc;
  for (int64_t i = 0; i < d.size(); i += batch) {
    auto x = d.images.slice(0, i, std::min(i + batch, d.size())).to(device);
    acc.add(model.loss(x), x.size(0));
  }
  return acc.means();
}

torch::Tensor encode_all(AutoEncoder& model, const data::Dataset& d, int64_t batch, torch::Device device) {
  torch::NoGradGuard no_grad;
  model.eval();
  std::vector<torch::Tensor> zs;
  for (int64_t i = 0; i < d.size(); i += batch)
    zs.push_back(model.encode(d.images.slice(0, i, std::min(i + batch, d.size())).to(device)).to(torch::kCPU));
  return torch::cat(zs);
}

}  // namespace

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
}

namespace {

}  // namespace

double scheduled_lr(const TrainOptions& t, int64_t epoch_index) {
  if (t.lr_schedule == "cosine") return t.lr * 0.5 * (1 + std::cos(M_PI * double(epoch_index) / double(t.epochs)));
  if (t.lr_schedule == "step" && t.lr_decay_epoch > 0 && epoch_index >= t.lr_decay_epoch) return t.lr * t.lr_decay;
  return t.lr;
}

namespace {

std::string format_terms(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& kv : m) s += (s.empty() ? "" : " ") + kv.first + "=" + fmt::format("{:.6g}", kv.second);
  return s;
}

}  // namespace

TrainSummary train_autoencoder(const Config& config, const RunOptions& options) {
  const auto& t = config.train;
  const fs::path run(options.run_dir);
  const torch::Device device = parse_device(options.device.empty() ? t.device : options.device);

  // Data first: a missing dataset must fail before anything is written.
  spdlog::info("loading dataset '{}'", config.data.name);
  const data::Dataset train = data::load_dataset(config.data, data::Split::kTrain);
  const bool has_val = config.data.val_size > 0;
  const data::Dataset val = has_val ? data::load_dataset(config.data, data::Split::kVal) : data::Dataset{};
  const data::Dataset test = data::load_dataset(config.data, data::Split::kTest);
  spdlog::info("train {} / val {} / test {} images of shape [{}, {}, {}]", train.size(), val.size(), test.size(),
               train.images.size(1), train.images.size(2), train.images.size(3));

  prepare_run_dir(options.run_dir, options.resume, options.force);
  log_to_file((run / "train.log").string());
  if (!options.resume) atomic_write_text(run / "config.yml", to_yaml(config));
  ensure_dir(run / "checkpoints");

  seed_everything(t.seed);
  const models::ImageShape shape{train.images.size(1), train.images.size(2), train.images.size(3)};
  auto model = models::build_autoencoder(config.model, shape);
  model->to(device);
  int64_t n_params = 0;
  for (const auto& p : model->parameters()) n_params += p.numel();
  spdlog::info("model {} ({} parameters) on {}", model_signature(config.model, shape.sizes()), n_params, device.str());

  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(t.lr).weight_decay(t.weight_decay));
  const std::string signature = model_signature(config.model, shape.sizes());
  CheckpointState state;
  state.model_signature = signature;
  if (options.resume) {
    state = load_checkpoint((run / "checkpoints" / "last.pt").string(), *model, &optimizer, signature);
    spdlog::info("resumed from epoch {} (best validation loss {:.6g})", state.epoch, state.best_val);
  }

  TrainSummary summary;
  const int64_t n = train.size();
  const int64_t batches = (n + t.batch_size - 1) / t.batch_size;
  for (int64_t epoch = state.epoch + 1; epoch <= t.epochs; ++epoch) {
    const double lr = scheduled_lr(t, epoch - 1);
    set_lr(optimizer, lr);
    model->train();
    auto perm = epoch_permutation(n, t.seed, epoch);
    TermAccumulator acc;
    Progress progress(fmt::format("epoch {}/{}", epoch, t.epochs), batches, "img");
    for (int64_t b = 0; b < batches; ++b) {
      auto idx = perm.slice(0, b * t.batch_size, std::min((b + 1) * t.batch_size, n));
      if (idx.size(0) < 2 && b > 0) break;  // a batch of one breaks batch norm: drop it
      auto x = data::augment(train.images.index_select(0, idx), config.data).to(device);
      auto terms = model->train_step(x, optimizer, t.grad_clip);
      acc.add(terms, x.size(0));
      if (!options.quiet)
        progress.update(1, x.size(0), [&] { return fmt::format("loss {:.4g}", terms.loss.item<double>()); });
    }
    if (!options.quiet) progress.finish();
    const double seconds = progress.elapsed_seconds();
    const double rate = double(acc.count) / std::max(seconds, 1e-9);
    auto train_terms = acc.means();
    for (const auto& kv : train_terms)
      require(std::isfinite(kv.second), fmt::format("training diverged at epoch {}: {} is {} (lower train.lr?)", epoch, kv.first, kv.second));
    auto val_terms = has_val ? evaluate(*model, val, t.eval_batch_size, device) : std::map<std::string, double>{};
    const double monitored = has_val ? val_terms.at("loss") : train_terms.at("loss");

    JsonObject line;
    line.add("epoch", epoch);
    for (const auto& kv : train_terms) line.add("train_" + kv.first, kv.second);
    for (const auto& kv : val_terms) line.add("val_" + kv.first, kv.second);
    line.add("lr", lr).add("images_per_s", rate).add("seconds", seconds);
    append_line(run / "metrics.jsonl", line.str());
    spdlog::info("epoch {}/{}: train {} | val {} | {:.0f} img/s, {:.1f}s", epoch, t.epochs, format_terms(train_terms),
                 format_terms(val_terms), rate, seconds);

    state.epoch = epoch;
    const bool best = monitored < state.best_val;
    if (best) state.best_val = monitored;
    save_checkpoint((run / "checkpoints" / "last.pt").string(), *model, &optimizer, state);
    if (best) save_checkpoint((run / "checkpoints" / "best.pt").string(), *model, &optimizer, state);
    summary.images_per_second = rate;
  }
  summary.epochs_completed = state.epoch;

  // Final outputs from the last model.
  summary.test_metrics = evaluate(*model, test, t.eval_batch_size, device);
  spdlog::info("test: {}", format_terms(summary.test_metrics));
  {
    torch::NoGradGuard no_grad;
    model->eval();
    const int64_t k = std::min<int64_t>(t.num_samples / 2 > 0 ? t.num_samples / 2 : 1, test.size());
    auto x = test.images.slice(0, 0, k).to(device);
    auto r = model->reconstruct(x);
    // Rows of 8 originals followed by their 8 reconstructions.
    std::vector<torch::Tensor> rows;
    for (int64_t i = 0; i < k; i += 8) {
      rows.push_back(x.slice(0, i, std::min(i + 8, k)));
      rows.push_back(r.slice(0, i, std::min(i + 8, k)));
    }
    save_image_grid(torch::cat(rows), 8, (run / "recon.png").string());
    save_image_grid(model->sample_prior(t.num_samples), 8, (run / "samples.png").string());
  }
  if (t.save_latents) {
    ensure_dir(run / "latents");
    std::vector<const data::Dataset*> splits = {&train, &test};
    if (has_val) splits.insert(splits.begin() + 1, &val);
    for (const auto* d : splits) {
      const std::string name = data::to_string(d->split);
      data::write_npy((run / "latents" / (name + ".npy")).string(), encode_all(*model, *d, t.eval_batch_size, device));
      data::write_npy((run / "latents" / (name + "_labels.npy")).string(), d->labels);
    }
  }
  JsonObject test_json;
  for (const auto& kv : summary.test_metrics) test_json.add(kv.first, kv.second);
  JsonObject s;
  s.add("epochs", summary.epochs_completed).add("images_per_s", summary.images_per_second).add("model", signature)
      .add("test", test_json);
  atomic_write_text(run / "summary.json", s.str() + "\n");
  spdlog::info("run written to {}", run.string());
  return summary;
}

}  // namespace pae::train
