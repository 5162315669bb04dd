// Fréchet distance between Gaussians fitted to feature sets (Heusel et al. 2017), kept apart
// from feature extraction (as pytorch-fid does).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace pae::metrics {

/// Mean [F] and unbiased covariance [F,F] of features, in float64.
struct GaussianStats {
  at::Tensor mean, cov;
  int64_t count = 0;
};

/// features:[N,F] -> statistics. Errors when N < min_samples (at least 2).
GaussianStats gaussian_stats(const at::Tensor& features, int64_t min_samples = 2);

/// ||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2), with Tr sqrt(S1 S2) computed as the sum of
/// square roots of the eigenvalues of the symmetric sqrt(S1) S2 sqrt(S1) (eigenvalues that
/// round below zero are clamped): no complex numbers, stable for singular covariances.
double frechet_distance(const GaussianStats& a, const GaussianStats& b);

/// The distance split into where it comes from: the means, ||mu1 - mu2||^2, and the
/// covariances, Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2); `spread` is Tr S1 / Tr S2 (below 1: the first
/// set varies less than the second, as blurry images do).
struct FrechetParts {
  double mean_term = 0, cov_term = 0, spread = 0;
  double total() const { return mean_term + cov_term; }
};
FrechetParts frechet_parts(const GaussianStats& a, const GaussianStats& b);

}  // namespace pae::metrics
