#include "pae/inference/langevin.h"

#include <torch/torch.h>

#include "pae/util/error.h"

namespace pae::inference {

namespace {

at::Tensor project(const at::Tensor& x) {
  const auto flat = x.flatten(1);
  return (flat / flat.norm(2, 1, true).clamp_min(1e-12)).view_as(x);
}

/// Metropolis-adjusted Langevin: proposal y = x - eps grad E(x) / T + sigma xi, accepted with
/// probability min(1, exp(-(E(y) - E(x)) / T) q(x | y) / q(y | x)), per sample.
at::Tensor mala(const Energy& energy, const at::Tensor& x0, const LangevinOptions& o, LangevinStats* stats) {
  require(o.noise > 0 && !o.anneal_noise && o.grad_clip == 0 && !o.clamp && !o.sphere,
          "Langevin: the Metropolis adjustment needs a constant positive noise and no clipping, clamping or "
          "projection (they change the proposal's density)");
  const auto value_and_grad = [&](const at::Tensor& x) {
    auto xx = x.detach().requires_grad_(true);
    const auto e = energy(xx);
    TORCH_CHECK(e.dim() == 1 && e.size(0) == x.size(0), "Langevin: the energy must return [B], got ", e.sizes());
    auto g = torch::autograd::grad({e.sum()}, {xx})[0];
    return std::make_pair(e.detach(), g.detach());
  };
  const double eps = o.step_size / o.temperature, var = o.noise * o.noise;
  // log q(to | from) up to a constant: -|to - from + eps grad(from)|^2 / (2 sigma^2), per sample.
  const auto log_q = [&](const at::Tensor& to, const at::Tensor& from, const at::Tensor& grad_from) {
    return -(to - from + eps * grad_from).flatten(1).pow(2).sum(1) / (2 * var);
  };
  auto x = x0.detach().clone();
  auto [e, g] = value_and_grad(x);
  const double e_start = e.mean().item<double>();
  double grad_norm = 0, accepted = 0;
  std::vector<int64_t> shape(size_t(x.dim()), 1);
  shape[0] = -1;
  for (int64_t t = 0; t < o.steps; ++t) {
    grad_norm += g.flatten(1).norm(2, 1).mean().item<double>();
    const auto xi = o.generator.defined() ? at::randn(x.sizes(), o.generator, x.options().device(torch::kCPU))
                                          : torch::randn(x.sizes(), x.options().device(torch::kCPU));
    const auto y = x - eps * g + o.noise * xi.to(x.device());
    auto [ey, gy] = value_and_grad(y);
    const auto log_alpha = -(ey - e) / o.temperature + log_q(x, y, gy) - log_q(y, x, g);
    const auto opts = torch::TensorOptions().dtype(torch::kFloat64);
    const auto u = o.generator.defined() ? at::rand({x.size(0)}, o.generator, opts) : torch::rand({x.size(0)}, opts);
    const auto accept = u.log().to(log_alpha.device()) < log_alpha.to(torch::kFloat64);
    accepted += accept.to(torch::kFloat64).mean().item<double>();
    x = torch::where(accept.view(shape), y, x);
    g = torch::where(accept.view(shape), gy, g);
    e = torch::where(accept, ey, e);
  }
  if (stats) {
    const double n = o.steps ? double(o.steps) : 1.0;
    *stats = {e_start, e.mean().item<double>(), grad_norm / n, 0.0, o.steps ? accepted / n : 1.0};
  }
  return x;
}

}  // namespace

at::Tensor langevin(const Energy& energy, const at::Tensor& x0, const LangevinOptions& o, LangevinStats* stats) {
  require(o.steps >= 0 && o.step_size >= 0 && o.noise >= 0 && o.temperature > 0,
          "Langevin: steps, step size and noise must be >= 0 and the temperature > 0");
  torch::AutoGradMode grad_on(true);  // chains need gradients even inside a no-grad evaluation
  if (o.metropolis) return mala(energy, x0, o, stats);
  auto x = x0.detach().clone();
  if (o.sphere) x = project(x);
  if (o.clamp) x = x.clamp(o.clamp_min, o.clamp_max);
  double grad_norm = 0, clipped = 0, e_start = 0, e_end = 0;
  for (int64_t t = 0; t < o.steps; ++t) {
    x.requires_grad_(true);
    const auto e = energy(x);
    TORCH_CHECK(e.dim() == 1 && e.size(0) == x.size(0), "Langevin: the energy must return [B], got ", e.sizes());
    if (t == 0) e_start = e.mean().item<double>();
    auto g = torch::autograd::grad({e.sum()}, {x})[0];
    x = x.detach();
    const auto norms = g.flatten(1).norm(2, 1);
    grad_norm += norms.mean().item<double>();
    if (o.grad_clip > 0 && o.clip_rows) {
      const auto rows = g.norm(2, -1, true);
      clipped += (rows > o.grad_clip).to(torch::kFloat64).mean().item<double>();
      g = g * (o.grad_clip / rows.clamp_min(1e-12)).clamp_max(1.0);
    } else if (o.grad_clip > 0) {
      const auto scale = (o.grad_clip / norms.clamp_min(1e-12)).clamp_max(1.0);
      clipped += (norms > o.grad_clip).to(torch::kFloat64).mean().item<double>();
      std::vector<int64_t> shape(size_t(g.dim()), 1);
      shape[0] = -1;
      g = g * scale.view(shape);
    }
    const double sigma = o.anneal_noise ? o.noise / double(1 + t) : o.noise;
    const auto xi = o.generator.defined()
                        ? at::randn(x.sizes(), o.generator, x.options().device(torch::kCPU)).to(x.device())
                        : torch::randn_like(x);
    x = x - o.step_size / o.temperature * g + sigma * xi;
    if (o.sphere) x = project(x);
    if (o.clamp) x = x.clamp(o.clamp_min, o.clamp_max);
  }
  if (stats) {
    {
      torch::NoGradGuard no_grad;
      e_end = energy(x).mean().item<double>();
    }
    if (o.steps == 0) e_start = e_end;
    *stats = {e_start, e_end, o.steps ? grad_norm / double(o.steps) : 0.0, o.steps ? clipped / double(o.steps) : 0.0,
              1.0};
  }
  return x.detach();
}

}  // namespace pae::inference
