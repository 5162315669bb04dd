#include "pae/metrics/fid.h"

#include <torch/torch.h>

#include <limits>

#include "pae/util/error.h"

namespace pae::metrics {

GaussianStats gaussian_stats(const at::Tensor& features, int64_t min_samples) {
  require(features.dim() == 2, "FID: expected features [N,F], got " + std::to_string(features.dim()) + " dimensions");
  const int64_t n = features.size(0);
  min_samples = std::max<int64_t>(min_samples, 2);
  require(n >= min_samples, "FID needs at least " + std::to_string(min_samples) + " samples per set, got " +
                                std::to_string(n) + " (FID from few samples is biased upwards; use more)");
  const auto f = features.to(torch::kCPU, torch::kFloat64);
  require(torch::isfinite(f).all().item<bool>(), "FID: the features contain NaN or Inf");
  GaussianStats s;
  s.mean = f.mean(0);
  const auto c = f - s.mean;
  s.cov = torch::matmul(c.t(), c) / double(n - 1);
  s.count = n;
  return s;
}

FrechetParts frechet_parts(const GaussianStats& a, const GaussianStats& b) {
  require(a.mean.size(0) == b.mean.size(0), "FID: feature dimensions differ (" + std::to_string(a.mean.size(0)) +
                                                " vs " + std::to_string(b.mean.size(0)) + ")");
  const auto s1 = (a.cov + a.cov.t()) / 2, s2 = (b.cov + b.cov.t()) / 2;  // exact symmetry for eigh
  // Eigenvalues within rounding noise of zero (F ulps of the largest) are zero: their square
  // roots would otherwise add sqrt(noise) each, which dominates the error of low-rank inputs.
  const double eps = std::numeric_limits<double>::epsilon() * double(s1.size(0));
  auto floor_zero = [eps](const at::Tensor& l) {
    const double cut = eps * l.abs().max().item<double>();
    return torch::where(l > cut, l, torch::zeros_like(l));
  };
  auto [l1, v1] = torch::linalg::eigh(s1, "L");
  const auto root1 = torch::matmul(v1 * floor_zero(l1).sqrt().unsqueeze(0), v1.t());
  auto m = torch::matmul(torch::matmul(root1, s2), root1);
  m = (m + m.t()) / 2;
  const double tr_sqrt = floor_zero(torch::linalg::eigvalsh(m, "L")).sqrt().sum().item<double>();
  FrechetParts parts;
  parts.mean_term = (a.mean - b.mean).pow(2).sum().item<double>();
  const double t1 = s1.trace().item<double>(), t2 = s2.trace().item<double>();
  parts.cov_term = t1 + t2 - 2 * tr_sqrt;
  parts.spread = t2 > 0 ? t1 / t2 : 0.0;
  return parts;
}

double frechet_distance(const GaussianStats& a, const GaussianStats& b) { return frechet_parts(a, b).total(); }

}  // namespace pae::metrics
