#include "pae/flows/dnf.h"

#include <torch/torch.h>

#include <cmath>

#include "pae/nn/sample_noise.h"
#include "pae/util/error.h"

namespace pae::flows {

namespace {

constexpr double kLog2Pi = 1.8378770664093453;  // log(2 pi)

/// log N(t; 0, s^2 I) summed over t's features: [B].
torch::Tensor gaussian_log_density(const torch::Tensor& t, double s) {
  return -0.5 * t.pow(2).sum(1) / (s * s) - double(t.size(1)) * (std::log(s) + 0.5 * kLog2Pi);
}

}  // namespace

DenoisingFlow::DenoisingFlow(const DnfOptions& options) : options_(options) {
  const auto& o = options_;
  require(o.manifold_dim >= 1 && o.manifold_dim < o.data_dim,
          "dnf: the manifold's dimension " + std::to_string(o.manifold_dim) + " must lie in [1, " +
              std::to_string(o.data_dim) + ") (the data's dimension)");
  require(o.sigma > 0 && std::isfinite(o.sigma), "dnf: the inflation noise std must be positive");
  require(o.recon_weight >= 0 && o.off_manifold_weight >= 0, "dnf: the loss weights must be >= 0");
  outer_ = register_module("outer", build_flow(o.data_dim, o.outer));
  inner_ = register_module("inner", build_flow(o.manifold_dim, o.inner));
}

DnfCode DenoisingFlow::code(const torch::Tensor& x) {
  const int64_t d = options_.manifold_dim;
  TORCH_CHECK(x.dim() == 2 && x.size(1) == options_.data_dim, "dnf: expected [B,", options_.data_dim, "], got ",
              x.sizes());
  auto [h, log_det_f] = outer_->forward(x);
  DnfCode c;
  c.chart = h.narrow(1, 0, d);
  c.off = h.narrow(1, d, options_.data_dim - d);
  auto [u, log_det_g] = inner_->forward(c.chart);
  c.u = u;
  c.log_det = log_det_f + log_det_g;
  return c;
}

torch::Tensor DenoisingFlow::log_prob(const torch::Tensor& x) { return log_prob_of(code(x)); }

torch::Tensor DenoisingFlow::log_prob_of(const DnfCode& c) const {
  return gaussian_log_density(c.u, 1.0) + gaussian_log_density(c.off, options_.sigma) + c.log_det;
}

torch::Tensor DenoisingFlow::log_prob_on_manifold(const torch::Tensor& x) {
  const double off_dims = double(options_.data_dim - options_.manifold_dim);
  return log_prob(x) + 0.5 * off_dims * (kLog2Pi + 2 * std::log(options_.sigma));
}

torch::Tensor DenoisingFlow::off_manifold(const torch::Tensor& x) {
  return code(x).off.pow(2).sum(1) > options_.sigma * options_.sigma / 3;
}

torch::Tensor DenoisingFlow::encode(const torch::Tensor& x) { return code(x).u; }

torch::Tensor DenoisingFlow::decode(const torch::Tensor& u) {
  const auto chart = inner_->inverse(u).first;
  return project_chart(chart);
}

torch::Tensor DenoisingFlow::project(const torch::Tensor& x) {
  const auto h = outer_->forward(x).first;
  return project_chart(h.narrow(1, 0, options_.manifold_dim));
}

torch::Tensor DenoisingFlow::project_chart(const torch::Tensor& chart) {
  const auto zeros = torch::zeros({chart.size(0), options_.data_dim - options_.manifold_dim}, chart.options());
  return outer_->inverse(torch::cat({chart, zeros}, 1)).first;
}

torch::Tensor DenoisingFlow::sample(int64_t n, double temperature) {
  const auto params = parameters();
  const auto opts = params.empty() ? torch::TensorOptions() : params.front().options();
  return decode(torch::randn({n, options_.manifold_dim}, opts) * temperature);
}

DnfLoss DenoisingFlow::loss(const torch::Tensor& x, const torch::Tensor& eps) {
  const auto inflated = x + options_.sigma * eps;
  const auto c = code(inflated);
  DnfLoss l;
  l.nll = -log_prob_of(c).mean();
  l.recon = (project_chart(c.chart) - x).pow(2).mean();
  l.off_manifold = c.off.pow(2).mean();
  l.total = l.nll + options_.recon_weight * l.recon + options_.off_manifold_weight * l.off_manifold;
  return l;
}

std::vector<std::pair<std::string, std::vector<at::Tensor>>> DenoisingFlow::parameter_groups() {
  return {{"dnf", parameters()}};
}

void DenoisingFlow::train_step(const nn::Batch& batch, nn::StepContext& ctx) {
  const auto l = loss(batch.x, nn::sample_randn_like(batch.x));  // a fresh inflation every batch
  ctx.step("dnf", l.total, {{"nll", l.nll}, {"recon", l.recon}, {"off_manifold", l.off_manifold}});
  ctx.log("loss", l.total);
  ctx.log("nll", l.nll);
  ctx.log("recon", l.recon);
  ctx.log("off_manifold", l.off_manifold);
}

nn::Terms DenoisingFlow::validate(const nn::Batch& data, int64_t batch_size) {
  const bool was_training = is_training();
  eval();
  torch::NoGradGuard no_grad;
  const auto device = parameters().front().device();
  nn::Terms sums;
  const int64_t n = data.x.size(0), step = batch_size > 0 ? batch_size : n;
  for (int64_t at = 0; at < n; at += step) {
    const auto x = data.x.slice(0, at, std::min(n, at + step)).to(device);
    const auto l = loss(x, torch::zeros_like(x));  // clean data: no inflation
    const double w = double(x.size(0)) / double(n);
    sums["loss"] += w * l.total.item<double>();
    sums["nll"] += w * l.nll.item<double>();
    sums["recon"] += w * l.recon.item<double>();
    sums["off_manifold"] += w * l.off_manifold.item<double>();
  }
  train(was_training);
  return sums;
}

std::string DenoisingFlow::signature() const {
  const auto& o = options_;
  return "dnf/D" + std::to_string(o.data_dim) + "/d" + std::to_string(o.manifold_dim) + "/" + o.outer.type + "x" +
         std::to_string(o.outer.layers) + "/" + o.inner.type + "x" + std::to_string(o.inner.layers);
}

}  // namespace pae::flows
