#include "pae/flows/latent_flow.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>

#include "pae/data/npy.h"
#include "pae/train/checkpoint.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"
#include "pae/util/progress.h"
#include "pae/util/runtime.h"

namespace pae::flows {

LatentFlow::LatentFlow(int64_t dim, const FlowOptions& options) {
  flow_ = register_module("flow", build_flow(dim, options));
  mean_ = register_buffer("mean", torch::zeros({dim}));
  std_ = register_buffer("std", torch::ones({dim}));
}

torch::Tensor LatentFlow::log_prob(const torch::Tensor& z) {
  TORCH_CHECK(z.dim() == 2 && z.size(1) == dim(), "LatentFlow::log_prob: expected [B,", dim(), "], got ", z.sizes());
  return flow_->log_prob((z - mean_) / std_) - torch::log(std_).sum();
}

torch::Tensor LatentFlow::sample(int64_t n, double temperature) { return flow_->sample(n, temperature) * std_ + mean_; }

torch::Tensor LatentFlow::to_gaussian(const torch::Tensor& z) { return flow_->forward((z - mean_) / std_).first; }

torch::Tensor LatentFlow::from_gaussian(const torch::Tensor& u) { return flow_->inverse(u).first * std_ + mean_; }

void LatentFlow::fit_standardisation(const torch::Tensor& z) {
  torch::NoGradGuard no_grad;
  mean_.copy_(z.mean(0));
  std_.copy_(z.std(0).clamp_min(1e-8));
  flow_->initialize((z - mean_) / std_);
}

LatentSources latents_of_run(const std::string& ae_run) {
  const fs::path dir = fs::path(ae_run) / "latents";
  require(fs::is_regular_file(dir / "train.npy"),
          "--ae-run " + ae_run + ": " + (dir / "train.npy").string() + " not found (train the AE with pae-train first)");
  LatentSources s;
  s.train = (dir / "train.npy").string();
  if (fs::is_regular_file(dir / "val.npy")) s.val = (dir / "val.npy").string();
  if (fs::is_regular_file(dir / "test.npy")) s.test = (dir / "test.npy").string();
  return s;
}

std::string latent_checksum(const torch::Tensor& z) {
  auto c = z.to(torch::kCPU, torch::kFloat32).contiguous();
  const auto* p = static_cast<const unsigned char*>(c.data_ptr());
  uint64_t h = 1469598103934665603ULL;
  for (int64_t i = 0; i < c.numel() * 4; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

double gaussian_mean_log_prob(const torch::Tensor& train, const torch::Tensor& test) {
  auto a = train.to(torch::kFloat64), b = test.to(torch::kFloat64);
  const int64_t d = a.size(1);
  auto mu = a.mean(0);
  auto centred = a - mu;
  auto cov = centred.t().matmul(centred) / double(a.size(0) - 1) + 1e-9 * torch::eye(d, a.options());
  auto l = torch::linalg_cholesky(cov);
  auto y = torch::linalg_solve_triangular(l, (b - mu).t(), /*upper=*/false, /*left=*/true, /*unitriangular=*/false);
  auto logdet = 2 * torch::log(torch::diagonal(l)).sum();
  auto lp = -0.5 * (y.pow(2).sum(0) + logdet + double(d) * std::log(2 * M_PI));
  return lp.mean().item<double>();
}

namespace {

torch::Tensor load_latents(const std::string& path, int64_t dim, const std::string& what) {
  auto z = data::read_npy(path);
  require(z.dim() == 2, path + ": expected latents [N,D], got rank " + std::to_string(z.dim()));
  require(z.size(0) > 0, path + ": the " + what + " latents are empty");
  require(dim < 0 || z.size(1) == dim, path + ": " + std::to_string(z.size(1)) + "-dimensional latents, expected " +
                                           std::to_string(dim) + " like the training latents");
  z = z.to(torch::kFloat64);
  require(torch::isfinite(z).all().item<bool>(), path + ": latents contain NaN or Inf");
  return z;
}

double mean_log_prob(LatentFlow& flow, const torch::Tensor& z, torch::Dtype dtype, torch::Tensor* per_sample = nullptr) {
  torch::NoGradGuard no_grad;
  flow.eval();
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < z.size(0); i += 4096) parts.push_back(flow.log_prob(z.slice(0, i, std::min(i + 4096, z.size(0))).to(dtype)));
  auto lp = torch::cat(parts);
  if (per_sample) *per_sample = lp;
  return lp.mean().item<double>();
}

}  // namespace

FlowFitSummary fit_latent_flow(const Config& config, const LatentSources& src, const FlowRunOptions& options) {
  const auto& t = config.train;
  const torch::Dtype dtype = t.dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
  auto train = load_latents(src.train, -1, "training");
  const int64_t d = train.size(1);
  torch::Tensor val = src.val.empty() ? torch::Tensor() : load_latents(src.val, d, "validation");
  torch::Tensor test = src.test.empty() ? torch::Tensor() : load_latents(src.test, d, "test");
  spdlog::info("latents: train {} x {}{}{}", train.size(0), d, val.defined() ? fmt::format(", val {}", val.size(0)) : "",
               test.defined() ? fmt::format(", test {}", test.size(0)) : "");

  const fs::path run(options.run_dir);
  train::prepare_run_dir(options.run_dir, options.resume, options.force);
  train::log_to_file((run / "flow.log").string());
  if (!options.resume) atomic_write_text(run / "config.yml", to_yaml(config));
  ensure_dir(run / "checkpoints");
  const std::string checksum = latent_checksum(train);
  atomic_write_text(run / "latents.json", JsonObject()
                                              .add("train", fs::absolute(src.train).string())
                                              .add("dim", d)
                                              .add("checksum", checksum)
                                              .str() + "\n");

  seed_everything(t.seed);
  auto flow = std::make_shared<LatentFlow>(d, config.flow);
  flow->to(dtype);
  flow->fit_standardisation(train.slice(0, 0, std::min<int64_t>(train.size(0), 10000)).to(dtype));
  torch::optim::Adam optimizer(flow->parameters(), torch::optim::AdamOptions(t.lr).weight_decay(t.weight_decay));
  const std::string signature = "flow/" + config.flow.type + "/d" + std::to_string(d) + "/" + t.dtype;
  train::CheckpointState state;
  state.model_signature = signature;
  int64_t stale = 0;
  if (options.resume) {
    state = train::load_checkpoint((run / "checkpoints" / "last.pt").string(), *flow, &optimizer, signature);
    spdlog::info("resumed from epoch {}", state.epoch);
  }
  int64_t n_params = 0;
  for (const auto& p : flow->parameters()) n_params += p.numel();
  spdlog::info("flow {} with {} layers, {} parameters", signature, config.flow.layers, n_params);

  FlowFitSummary summary;
  const int64_t n = train.size(0), batches = (n + t.batch_size - 1) / t.batch_size;
  const auto train_t = train.to(dtype);
  for (int64_t epoch = state.epoch + 1; epoch <= t.epochs; ++epoch) {
    const double lr = train::scheduled_lr(t, epoch - 1);
    train::set_lr(optimizer, lr);
    flow->train();
    auto perm = train::epoch_permutation(n, t.seed, epoch);
    Progress progress(fmt::format("epoch {}/{}", epoch, t.epochs), batches, "z");
    auto nll_sum = torch::zeros({}, torch::kFloat64);
    for (int64_t b = 0; b < batches; ++b) {
      auto z = train_t.index_select(0, perm.slice(0, b * t.batch_size, std::min((b + 1) * t.batch_size, n)));
      if (t.latent_noise > 0) z = z + t.latent_noise * torch::randn_like(z);
      optimizer.zero_grad();
      auto loss = -flow->log_prob(z).mean();
      loss.backward();
      if (t.grad_clip > 0) torch::nn::utils::clip_grad_norm_(flow->parameters(), t.grad_clip);
      optimizer.step();
      nll_sum += loss.detach().to(torch::kFloat64) * double(z.size(0));
      if (!options.quiet) progress.update(1, z.size(0));
    }
    if (!options.quiet) progress.finish();
    const double seconds = progress.elapsed_seconds();
    const double train_nll = nll_sum.item<double>() / double(n);
    require(std::isfinite(train_nll), fmt::format("flow fitting diverged at epoch {} (lower train.lr?)", epoch));
    const double val_lp = val.defined() ? mean_log_prob(*flow, val, dtype) : -train_nll;
    summary.samples_per_second = double(n) / seconds;
    append_line(run / "metrics.jsonl", JsonObject()
                                           .add("epoch", epoch)
                                           .add("train_nll", train_nll)
                                           .add("val_log_prob", val_lp)
                                           .add("lr", lr)
                                           .add("samples_per_s", summary.samples_per_second)
                                           .add("seconds", seconds)
                                           .str());
    spdlog::info("epoch {}/{}: train nll {:.4f} | val log p {:.4f} | {:.0f} samples/s", epoch, t.epochs, train_nll, val_lp,
                 summary.samples_per_second);
    state.epoch = epoch;
    const bool best = -val_lp < state.best_val;
    if (best) {
      state.best_val = -val_lp;
      stale = 0;
    } else {
      ++stale;
    }
    train::save_checkpoint((run / "checkpoints" / "last.pt").string(), *flow, &optimizer, state);
    if (best) train::save_checkpoint((run / "checkpoints" / "best.pt").string(), *flow, &optimizer, state);
    if (t.patience > 0 && stale >= t.patience) {
      spdlog::info("early stop: validation log p has not improved for {} epochs", stale);
      break;
    }
  }
  summary.epochs = state.epoch;
  // Report with the best checkpoint.
  train::load_checkpoint((run / "checkpoints" / "best.pt").string(), *flow, nullptr, signature);
  ensure_dir(run / "log_prob");
  JsonObject flow_lp, gauss_lp;
  std::vector<std::pair<std::string, torch::Tensor>> splits = {{"train", train}};
  if (val.defined()) splits.emplace_back("val", val);
  if (test.defined()) splits.emplace_back("test", test);
  for (const auto& [name, z] : splits) {
    torch::Tensor lp;
    summary.mean_log_prob[name] = mean_log_prob(*flow, z, dtype, &lp);
    summary.gaussian_log_prob[name] = gaussian_mean_log_prob(train, z);
    data::write_npy((run / "log_prob" / (name + ".npy")).string(), lp);
    flow_lp.add(name, summary.mean_log_prob[name]);
    gauss_lp.add(name, summary.gaussian_log_prob[name]);
    spdlog::info("{}: mean log p(z) {:.3f} nats (full-covariance Gaussian {:.3f})", name, summary.mean_log_prob[name],
                 summary.gaussian_log_prob[name]);
  }
  atomic_write_text(run / "summary.json", JsonObject()
                                              .add("epochs", summary.epochs)
                                              .add("samples_per_s", summary.samples_per_second)
                                              .add("flow", signature)
                                              .add("mean_log_prob", flow_lp)
                                              .add("gaussian_mean_log_prob", gauss_lp)
                                              .str() + "\n");
  return summary;
}

std::shared_ptr<LatentFlow> load_latent_flow(const std::string& flow_dir, Config* config_out) {
  const fs::path dir(flow_dir);
  Config config = load_config((dir / "config.yml").string());
  const std::string meta = read_text(dir / "latents.json");
  const auto pos = meta.find("\"dim\": ");
  require(pos != std::string::npos, (dir / "latents.json").string() + ": no \"dim\"");
  const int64_t d = std::stoll(meta.substr(pos + 7));
  auto flow = std::make_shared<LatentFlow>(d, config.flow);
  flow->to(config.train.dtype == "float64" ? torch::kFloat64 : torch::kFloat32);
  const std::string signature = "flow/" + config.flow.type + "/d" + std::to_string(d) + "/" + config.train.dtype;
  train::load_checkpoint((dir / "checkpoints" / "best.pt").string(), *flow, nullptr, signature);
  flow->eval();
  if (config_out) *config_out = config;
  return flow;
}

}  // namespace pae::flows
