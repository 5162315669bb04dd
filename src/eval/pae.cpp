#include "pae/eval/pae.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "pae/data/npy.h"
#include "pae/flows/latent_flow.h"
#include "pae/models/autoencoder.h"
#include "pae/train/flow_run.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/run_state.h"
#include "pae/util/runtime.h"

namespace pae::eval {

namespace {

constexpr int64_t kBatch = 1000;

/// Applies fn to batches of x along dim 0 and concatenates the results (on the CPU).
template <class Fn>
at::Tensor batched(const at::Tensor& x, Fn&& fn) {
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < x.size(0); i += kBatch) parts.push_back(fn(x.slice(0, i, i + kBatch)).to(torch::kCPU));
  return torch::cat(parts);
}

}  // namespace

Pae::Pae(std::shared_ptr<models::AutoEncoder> ae, std::shared_ptr<flows::LatentFlow> flow, Config config)
    : ae_(std::move(ae)), flow_(std::move(flow)), config_(std::move(config)) {
  ae_->eval();
  if (flow_) {
    require(flow_->dim() == ae_->latent_dim(), "flow of dimension " + std::to_string(flow_->dim()) +
                                                   " on an auto-encoder of latent_dim " +
                                                   std::to_string(ae_->latent_dim()));
    flow_->eval();
  }
}

c10::Device evaluation_device(const std::string& device, const std::string& run_device, const std::string& ae_run) {
  if (!device.empty()) return parse_device(device);
  if (run_device.rfind("cuda", 0) == 0 && !torch::cuda::is_available()) {
    spdlog::warn("{} was trained on {} (its train.device) and this machine has no CUDA device: evaluating on the CPU",
                 ae_run, run_device);
    return torch::kCPU;
  }
  try {
    return parse_device(run_device);
  } catch (const Error& e) {
    throw Error(ae_run + "/config.yml train.device: " + e.what() + "; choose a device with --device");
  }
}

Pae Pae::load(const std::string& ae_run, const std::string& flow_run, const std::string& checkpoint,
              const std::string& device, bool strict) {
  Config config;
  int64_t ae_epoch = -1, flow_epoch = -1;
  auto ae = train::load_autoencoder(ae_run, &config, checkpoint, &ae_epoch);
  check_run_finished(ae_run, checkpoint.empty() ? config.train.model_checkpoint : checkpoint, ae_epoch, strict);
  const auto where = evaluation_device(device, config.train.device, ae_run);
  ae->to(where);
  require(flow_run.empty() || checkpoint.empty() || checkpoint == config.train.model_checkpoint,
          "--checkpoint " + checkpoint + " with a flow: the flow in " + flow_run + " was fitted on the latents of " +
              ae_run + "'s " + config.train.model_checkpoint + " model; drop --flow or --checkpoint");
  std::shared_ptr<flows::LatentFlow> flow;
  if (!flow_run.empty()) {
    flow = train::load_latent_flow(flow_run, nullptr, "", where, &flow_epoch);
    check_run_finished(flow_run, "model", flow_epoch, strict);
    check_flow_matches(flow_run, ae_run, flow->dim(), ae->latent_dim());
  }
  spdlog::info("{}{} on {}", ae_run, flow_run.empty() ? "" : " and " + flow_run, where.str());
  Pae p(ae, flow, config);
  p.ae_run_ = ae_run;
  p.flow_run_ = flow_run;
  p.checkpoint_ = checkpoint.empty() ? config.train.model_checkpoint : checkpoint;
  return p;
}

c10::Device Pae::device() const { return ae_->parameters().front().device(); }

std::vector<int64_t> Pae::image_shape() const { return ae_->image_shape().sizes(); }

at::Tensor Pae::encode(const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  const auto device = ae_->parameters().front().device();
  return batched(x, [&](const at::Tensor& b) { return ae_->encode(b.to(device)); });
}

at::Tensor Pae::decode(const at::Tensor& z) {
  torch::NoGradGuard no_grad;
  const auto device = ae_->parameters().front().device();
  return batched(z, [&](const at::Tensor& b) { return ae_->decode(b.to(device, torch::kFloat32)); });
}

at::Tensor Pae::reconstruct(const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  const auto device = ae_->parameters().front().device();
  return batched(x, [&](const at::Tensor& b) { return ae_->reconstruct(b.to(device)); });
}

at::Tensor Pae::log_p_z(const at::Tensor& z) {
  require(has_flow(), "log p(z) needs a flow (--flow FLOW_DIR)");
  torch::NoGradGuard no_grad;
  const auto p = flow_->parameters().front();
  return batched(z, [&](const at::Tensor& b) { return flow_->log_prob(b.to(p.device(), p.scalar_type())); })
      .to(torch::kFloat64);
}

at::Tensor Pae::sample_latents(int64_t n, double temperature) {
  torch::NoGradGuard no_grad;
  // Without a flow, the family's own prior (N(0, I), the AAE's prior, the NAE's sphere).
  if (!flow_) return ae_->sample_latents(n).to(torch::kCPU) * temperature;
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < n; i += kBatch)
    parts.push_back(flow_->sample(std::min(kBatch, n - i), temperature).to(torch::kCPU, torch::kFloat32));
  return torch::cat(parts);
}

at::Tensor Pae::sample(int64_t n, double temperature) {
  // Batch by batch, so that the random stream is the one the programs used before the bundle:
  // flow samples of a batch, then its decode.
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < n; i += kBatch) parts.push_back(decode(sample_latents(std::min(kBatch, n - i), temperature)));
  return torch::cat(parts);
}

at::Tensor Pae::sample_prior(int64_t n) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < n; i += kBatch) parts.push_back(ae_->sample_prior(std::min(kBatch, n - i)).to(torch::kCPU));
  return torch::cat(parts);
}

at::Tensor Pae::interpolate(const at::Tensor& a, const at::Tensor& b, int64_t steps) {
  torch::NoGradGuard no_grad;
  require(steps >= 2, "interpolation needs at least 2 steps");
  auto z = encode(torch::stack({a, b}));
  at::Tensor path;
  if (flow_) {
    const auto p = flow_->parameters().front();
    auto u = flow_->to_gaussian(z.to(p.device(), p.scalar_type()));
    auto t = torch::linspace(0, 1, steps, u.options()).unsqueeze(1);
    path = flow_->from_gaussian(u[0].unsqueeze(0) * (1 - t) + u[1].unsqueeze(0) * t);
  } else {
    auto t = torch::linspace(0, 1, steps, z.options()).unsqueeze(1);
    path = z[0].unsqueeze(0) * (1 - t) + z[1].unsqueeze(0) * t;
  }
  return decode(path.to(torch::kCPU, torch::kFloat32));
}

std::map<std::string, at::Tensor> Pae::scores(const at::Tensor& images, int64_t batch) {
  torch::NoGradGuard no_grad;
  ae_->eval();
  const auto device = ae_->parameters().front().device();
  std::map<std::string, std::vector<at::Tensor>> parts;
  for (int64_t i = 0; i < images.size(0); i += batch) {
    const auto x = images.slice(0, i, i + batch).to(device);
    torch::Tensor z;
    for (auto& [name, s] : ae_->scores(x, &z)) parts[name].push_back(s.to(torch::kCPU, torch::kFloat64));
    if (flow_) {
      const auto dtype = flow_->parameters().front().scalar_type();
      const auto nlpz = -flow_->log_prob(z.to(dtype)).to(torch::kCPU, torch::kFloat64);
      parts["neg_log_p_z"].push_back(nlpz);
      if (sigma_.defined()) {  // Gaussian residual likelihood of the pixels given the decoded mean
        const auto s = sigma_.to(device, torch::kFloat64);
        const auto r = ((x.to(torch::kFloat64) - ae_->decode(z).to(torch::kFloat64)) / s).pow(2);
        const double log_norm = s.log().sum().item<double>() + 0.5 * double(s.numel()) * std::log(2 * M_PI);
        parts["neg_log_p_x"].push_back(nlpz + (0.5 * r.flatten(1).sum(1) + log_norm).to(torch::kCPU));
      }
    }
  }
  std::map<std::string, at::Tensor> out;
  for (auto& [name, p] : parts) out[name] = torch::cat(p);
  return out;
}

void Pae::set_pixel_sigma(const at::Tensor& sigma, const std::string& source) {
  require(sigma.sizes() == at::IntArrayRef(image_shape()) && torch::all(sigma > 0).item<bool>(),
          "pixel sigma from " + source + ": expected positive values of the image shape");
  sigma_ = sigma.to(torch::kFloat32);
  sigma_source_ = source;
}

void check_flow_matches(const std::string& flow_dir, const std::string& ae_run, int64_t flow_dim, int64_t ae_dim) {
  require(flow_dim == ae_dim, "flow " + flow_dir + " models " + std::to_string(flow_dim) +
                                  "-dimensional latents but auto-encoder " + ae_run + " has latent_dim " +
                                  std::to_string(ae_dim));
  const auto train = fs::path(ae_run) / "latents" / "train.npy";
  const auto meta_path = fs::path(flow_dir) / "latents.json";
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(read_text(meta_path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(meta_path.string() + ": not valid JSON (" + e.what() + ")");
  }
  require(meta.contains("checksum") && meta["checksum"].is_string(), meta_path.string() + ": no \"checksum\" string");
  if (fs::is_regular_file(train)) {
    const std::string sum = flows::latent_checksum(data::read_npy(train.string()));
    require(meta["checksum"].get<std::string>() == sum,
            "flow " + flow_dir + " was fitted on other latents than " + train.string() +
                " (checksum differs): refit it with pae-flow --ae-run " + ae_run);
  }
}

}  // namespace pae::eval
