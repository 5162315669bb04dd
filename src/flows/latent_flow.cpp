#include "pae/flows/latent_flow.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>

#include "pae/nn/sample_noise.h"

namespace pae::flows {

LatentFlow::LatentFlow(int64_t dim, const FlowOptions& options)
    : type_(options.type),
      dropout_(options.dropout),
      anneal_(options.dropout_anneal),
      current_dropout_(options.dropout) {
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

double chi2_quantile(int64_t dim, double p) {
  // Bisection on the chi-square CDF, the regularised lower incomplete gamma P(dim/2, x/2).
  const auto a = torch::tensor(double(dim) / 2, torch::kFloat64);
  double lo = 0, hi = double(dim) + 40 * std::sqrt(double(dim)) + 100;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (torch::igamma(a, torch::tensor(mid / 2, torch::kFloat64)).item<double>() < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

double typical_set_fraction(LatentFlow& flow, const torch::Tensor& z) {
  torch::NoGradGuard no_grad;
  flow.eval();
  const auto p = flow.parameters().front();
  const double lo = chi2_quantile(flow.dim(), 0.005), hi = chi2_quantile(flow.dim(), 0.995);
  int64_t inside = 0;
  for (int64_t i = 0; i < z.size(0); i += 4096) {
    const auto u = flow.to_gaussian(z.slice(0, i, std::min(i + 4096, z.size(0))).to(p.device(), p.scalar_type()));
    const auto r2 = u.pow(2).sum(1);
    inside += ((r2 >= lo) & (r2 <= hi)).sum().item<int64_t>();
  }
  return z.size(0) > 0 ? double(inside) / double(z.size(0)) : 0.0;
}

double LatentFlow::mean_log_prob(const torch::Tensor& z, torch::Tensor* per_sample) {
  torch::NoGradGuard no_grad;
  eval();
  const auto p = parameters().front();
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < z.size(0); i += 4096)
    parts.push_back(log_prob(z.slice(0, i, std::min(i + 4096, z.size(0))).to(p.device(), p.scalar_type())));
  auto lp = torch::cat(parts);
  if (per_sample) *per_sample = lp;
  return lp.mean().item<double>();
}

double LatentFlow::dropout_at(int64_t epoch) const {
  const auto from = static_cast<int64_t>(std::floor(anneal_ * double(epochs_)));
  if (epochs_ <= 0 || anneal_ >= 1 || epoch <= from) return dropout_;
  return dropout_ * double(std::max<int64_t>(epochs_ - epoch, 0)) / double(epochs_ - from);
}

void LatentFlow::train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) {
  if (const double p = dropout_at(ctx.epoch()); p != current_dropout_) {
    flow_->set_dropout(p);
    current_dropout_ = p;
  }
  auto z = batch.x;
  if (noise_ > 0) z = z + noise_ * std_ * pae::nn::sample_randn_like(z);  // noise_ std's of each dimension
  auto loss = -log_prob(z).mean();
  ctx.step("flow", loss);
  ctx.log("nll", loss);
}

pae::nn::Terms LatentFlow::validate(const pae::nn::Batch& data, int64_t /*batch_size*/) {
  const double lp = mean_log_prob(data.x);
  return {{"nll", -lp}, {"log_prob", lp}};
}

std::string LatentFlow::signature() const {
  const auto dtype = parameters().front().scalar_type() == torch::kFloat64 ? "float64" : "float32";
  return "flow/" + type_ + "/d" + std::to_string(flow_->dim()) + "/" + dtype;
}

void LatentFlow::fit_standardisation(const torch::Tensor& z) {
  torch::NoGradGuard no_grad;
  mean_.copy_(z.mean(0));
  std_.copy_(z.std(0).clamp_min(1e-8));
  flow_->initialize((z - mean_) / std_);
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

}  // namespace pae::flows
