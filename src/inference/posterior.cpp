#include "pae/inference/posterior.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "pae/inference/langevin.h"
#include "pae/util/error.h"

namespace pae::inference {

namespace {

/// observed / sigma^2 (Gaussian) or observed (Bernoulli), shaped like x.
at::Tensor pixel_weights(const at::Tensor& like, const at::Tensor& observed, const at::Tensor& sigma,
                         Likelihood lik = Likelihood::gaussian) {
  if (lik == Likelihood::bernoulli) return observed.to(like.scalar_type()).expand_as(like);
  require(torch::all(sigma > 0).item<bool>(), "posterior: every pixel sigma must be positive");
  return observed.to(like.scalar_type()) / sigma.to(like.scalar_type()).pow(2).expand_as(like);
}

/// The negative log posterior with the pixel weights already made.
at::Tensor weighted_objective(const Generator& g, const at::Tensor& u, const at::Tensor& x, const at::Tensor& w,
                              Likelihood lik) {
  const auto prior = 0.5 * u.pow(2).sum(1);
  if (lik == Likelihood::bernoulli) {
    const auto p = g(u).clamp(1e-6, 1 - 1e-6);
    return -((x * p.log() + (1 - x) * (1 - p).log()) * w).flatten(1).sum(1) + prior;
  }
  return 0.5 * ((g(u) - x).pow(2) * w).flatten(1).sum(1) + prior;
}

}  // namespace

Likelihood parse_likelihood(const std::string& name, const std::string& what) {
  if (name == "gaussian") return Likelihood::gaussian;
  if (name == "bernoulli") return Likelihood::bernoulli;
  throw Error(what + " '" + name + "': expected gaussian or bernoulli");
}

at::Tensor neg_log_posterior(const Generator& g, const at::Tensor& u, const at::Tensor& x, const at::Tensor& observed,
                             const at::Tensor& sigma, Likelihood lik) {
  return weighted_objective(g, u, x, pixel_weights(x, observed, sigma, lik), lik);
}

at::Tensor bernoulli_sigma(const at::Tensor& p) { return (p * (1 - p)).clamp_min(1e-6).sqrt(); }

MapResult map_estimate(const Generator& g, int64_t dim, const at::Tensor& x, const at::Tensor& observed,
                       const at::Tensor& sigma, const MapOptions& o) {
  require(o.steps >= 0 && o.restarts >= 1 && o.lr > 0 && o.lr_final > 0,
          "MAP: steps >= 0, restarts >= 1 and positive learning rates expected");
  torch::AutoGradMode grad_on(true);  // also inside a caller's no-grad evaluation
  const int64_t b = x.size(0), r = o.restarts;
  auto gen = at::detail::createCPUGenerator(o.seed);
  // Every restart of every image in one batch: row k * B + i is restart k of image i.
  auto u0 = at::randn({r, b, dim}, gen, torch::TensorOptions().dtype(x.scalar_type())) * o.init_std;
  u0[0].zero_();
  u0 = u0.view({r * b, dim}).to(x.device());
  const auto xs = x.repeat({r, 1, 1, 1}).view({r * b, -1});
  // The weights once (not at every step: the sigma check synchronises a device).
  const auto w = pixel_weights(x, observed, sigma, o.likelihood).expand_as(x).repeat({r, 1, 1, 1}).view({r * b, -1});
  const Generator flat = [&](const at::Tensor& u) { return g(u).reshape({u.size(0), -1}); };
  auto objective = [&](const at::Tensor& u) { return weighted_objective(flat, u, xs, w, o.likelihood); };

  auto u = u0.clone().requires_grad_(true);
  torch::optim::Adam adam({u}, torch::optim::AdamOptions(o.lr));
  at::Tensor best_u = u0.clone(), best, start;
  {
    torch::NoGradGuard no_grad;
    start = objective(u0);
    best = start.clone();
  }
  for (int64_t t = 0; t <= o.steps; ++t) {
    const double lr = o.lr * std::pow(o.lr_final / o.lr, o.steps > 1 ? double(t) / double(o.steps - 1) : 0.0);
    static_cast<torch::optim::AdamOptions&>(adam.param_groups()[0].options()).lr(lr);
    adam.zero_grad();
    const auto f = objective(u);
    {
      // The iterate just evaluated: kept when it is the best so far (the last one is evaluated
      // at t = steps, without a step after it).
      torch::NoGradGuard no_grad;
      const auto fd = f.detach();
      const auto better = fd < best;
      best_u = torch::where(better.unsqueeze(1), u.detach(), best_u);
      best = torch::where(better, fd, best);
    }
    if (t == o.steps) break;
    f.sum().backward();
    adam.step();
  }
  MapResult res;
  res.starts = start.view({r, b});
  res.ends = best.view({r, b});
  const auto pick = std::get<1>(res.ends.min(0));  // [B] best restart per image
  const auto rows = pick * b + torch::arange(b, pick.options());
  res.u = best_u.index_select(0, rows);
  res.objective = best.index_select(0, rows);
  return res;
}

at::Tensor gauss_newton(const Generator& g, const at::Tensor& u, const at::Tensor& observed, const at::Tensor& sigma) {
  torch::AutoGradMode grad_on(true);
  const int64_t b = u.size(0), d = u.size(1);
  auto uu = u.detach().clone().requires_grad_(true);
  const auto image = g(uu);
  const auto y = image.reshape({b, -1});
  // J^T w is linear in w; its gradient in w along e_k is J e_k, column k of the Jacobian.
  auto w = torch::zeros_like(y).requires_grad_(true);
  const auto jt_w = torch::autograd::grad({y}, {uu}, {w}, /*retain_graph=*/true, /*create_graph=*/true)[0];
  std::vector<at::Tensor> columns;
  for (int64_t k = 0; k < d; ++k)
    columns.push_back(torch::autograd::grad({jt_w.select(1, k).sum()}, {w}, {}, /*retain_graph=*/true)[0]);
  const auto jac = torch::stack(columns, 2).detach();  // [B,P,d]
  const auto weights = pixel_weights(image, observed, sigma).expand(image.sizes()).reshape({b, -1});
  return (jac * weights.unsqueeze(2)).transpose(1, 2).bmm(jac) + torch::eye(d, jac.options()).expand({b, d, d});
}

at::Tensor laplace_samples(const at::Tensor& u, const at::Tensor& hessian, int64_t n, uint64_t seed) {
  const int64_t b = u.size(0), d = u.size(1);
  auto gen = at::detail::createCPUGenerator(seed);
  const auto chol = at::linalg_cholesky(hessian);  // H = L L^T, so H^-1 = L^-T L^-1
  const auto eps = at::randn({b, d, n}, gen, torch::TensorOptions().dtype(hessian.scalar_type())).to(u.device());
  const auto s = at::linalg_solve_triangular(chol.transpose(1, 2), eps, /*upper=*/true);  // L^-T eps: cov H^-1
  return u.unsqueeze(1) + s.transpose(1, 2);
}

ChainResult posterior_chain(const Generator& g, const at::Tensor& start, const at::Tensor& u_map,
                            const at::Tensor& hessian, const at::Tensor& x, const at::Tensor& observed,
                            const at::Tensor& sigma, Likelihood lik, const ChainOptions& o) {
  require(o.steps >= 0 && o.step > 0, "posterior chain: steps >= 0 and a positive step expected");
  const int64_t b = start.size(0), n = start.size(1), d = start.size(2);
  ChainResult res;
  if (o.steps == 0) {
    res.u = start;
    return res;
  }
  const auto chol = at::linalg_cholesky(hessian.to(start.scalar_type()));  // [B,d,d], H = L L^T
  const auto lt = chol.transpose(1, 2);
  // v = L^T (u - u_map); u = u_map + L^-T v.
  const auto v0 = lt.bmm((start - u_map.unsqueeze(1)).transpose(1, 2)).transpose(1, 2);  // [B,n,d]
  const auto to_u = [&](const at::Tensor& v, int64_t lo, int64_t hi) {
    const auto vv = v.view({hi - lo, n, d}).transpose(1, 2);
    const auto du = at::linalg_solve_triangular(lt.slice(0, lo, hi), vv, /*upper=*/true).transpose(1, 2);
    return (u_map.slice(0, lo, hi).unsqueeze(1) + du).reshape({-1, d});
  };
  LangevinOptions lo;
  lo.steps = o.steps;
  lo.step_size = o.step;
  lo.noise = std::sqrt(2 * o.step);
  lo.metropolis = true;
  lo.generator = at::detail::createCPUGenerator(o.seed);
  const auto w = pixel_weights(x, observed, sigma, lik).expand_as(x);
  std::vector<at::Tensor> parts;
  double accepted = 0;
  const int64_t chunk = std::max<int64_t>(1, 2048 / n);  // images per batch of chains
  for (int64_t i = 0; i < b; i += chunk) {
    const int64_t hi = std::min(b, i + chunk);
    const auto xs = x.slice(0, i, hi).repeat_interleave(n, 0), ws = w.slice(0, i, hi).repeat_interleave(n, 0);
    const Energy energy = [&](const at::Tensor& v) { return weighted_objective(g, to_u(v, i, hi), xs, ws, lik); };
    LangevinStats stats;
    const auto v = langevin(energy, v0.slice(0, i, hi).reshape({-1, d}), lo, &stats);
    torch::NoGradGuard no_grad;
    parts.push_back(to_u(v, i, hi).view({hi - i, n, d}));
    accepted += stats.accepted * double(hi - i);
  }
  res.u = torch::cat(parts);
  res.accepted = accepted / double(b);
  return res;
}

}  // namespace pae::inference
