#include "pae/metrics/parzen.h"

#include <torch/torch.h>

#include <cmath>

#include "pae/util/error.h"

namespace pae::metrics {

at::Tensor parzen_log_prob(const at::Tensor& centres, const at::Tensor& x, double sigma, int64_t block) {
  require(centres.dim() == 2 && x.dim() == 2 && centres.size(1) == x.size(1),
          "Parzen: expected centres [M,D] and x [N,D] of the same D");
  require(centres.size(0) > 0 && x.size(0) > 0, "Parzen: empty set of centres or points");
  require(sigma > 0 && std::isfinite(sigma), "Parzen: sigma must be positive, got " + std::to_string(sigma));
  torch::NoGradGuard no_grad;
  const auto c = centres.to(torch::kFloat64), xs = x.to(torch::kFloat64);
  const int64_t m = c.size(0), d = c.size(1);
  const auto c_sq = c.pow(2).sum(1);
  auto out = torch::empty({xs.size(0)}, xs.options());
  for (int64_t i = 0; i < xs.size(0); i += block) {
    const auto xb = xs.slice(0, i, i + block);
    const auto x_sq = xb.pow(2).sum(1, true);
    // Running log-sum-exp over blocks of centres.
    auto acc = torch::full({xb.size(0)}, -std::numeric_limits<double>::infinity(), xs.options());
    for (int64_t j = 0; j < m; j += block) {
      const auto cb = c.slice(0, j, j + block);
      const auto dist = (x_sq + c_sq.slice(0, j, j + block).unsqueeze(0) - 2 * torch::matmul(xb, cb.t())).clamp_min(0);
      acc = torch::logaddexp(acc, torch::logsumexp(-dist / (2 * sigma * sigma), 1));
    }
    out.slice(0, i, i + block).copy_(acc - std::log(double(m)) - 0.5 * double(d) * std::log(2 * M_PI * sigma * sigma));
  }
  return out;
}

ParzenResult parzen_evaluate(const at::Tensor& centres, const at::Tensor& validation, const at::Tensor& test,
                             const std::vector<double>& grid) {
  require(!grid.empty(), "Parzen: empty sigma grid");
  ParzenResult r;
  double best = -std::numeric_limits<double>::infinity();
  for (double s : grid) {
    const double v = parzen_log_prob(centres, validation, s).mean().item<double>();
    r.validation.emplace_back(s, v);
    if (v > best) best = v, r.sigma = s;
  }
  const auto lp = parzen_log_prob(centres, test, r.sigma);
  r.mean = lp.mean().item<double>();
  r.std_error = lp.size(0) > 1 ? lp.std().item<double>() / std::sqrt(double(lp.size(0))) : 0.0;
  return r;
}

std::vector<double> log_grid(double lo, double hi, int64_t count) {
  require(lo > 0 && hi >= lo && count >= 1, "log_grid: expected 0 < lo <= hi and count >= 1");
  std::vector<double> g;
  for (int64_t i = 0; i < count; ++i)
    g.push_back(count == 1 ? lo
                           : std::exp(std::log(lo) + (std::log(hi) - std::log(lo)) * double(i) / double(count - 1)));
  return g;
}

}  // namespace pae::metrics
