// Parzen-window (Gaussian kernel density) log-likelihood, the AAE paper's protocol
// (Makhzani et al. 2015, after Breuleux et al.): fit on generated samples, choose the bandwidth
// on validation data, report the mean and its standard error on test data.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace pae::metrics {

/// Per-sample log p(x) under an isotropic Gaussian kernel of width sigma around each centre:
/// log (1/M) sum_i N(x; c_i, sigma^2 I). centres:[M,D], x:[N,D] -> [N] (float64), computed in
/// blocks with a running log-sum-exp so memory stays bounded.
at::Tensor parzen_log_prob(const at::Tensor& centres, const at::Tensor& x, double sigma, int64_t block = 1024);

struct ParzenResult {
  double sigma = 0;                                   ///< chosen on the validation set
  double mean = 0, std_error = 0;                     ///< test log-likelihood, standard error = std / sqrt(N)
  std::vector<std::pair<double, double>> validation;  ///< (sigma, mean validation log-likelihood)
};

/// Chooses sigma from `grid` by the mean validation log-likelihood, then scores `test`.
ParzenResult parzen_evaluate(const at::Tensor& centres, const at::Tensor& validation, const at::Tensor& test,
                             const std::vector<double>& grid);

/// `count` values log-spaced on [lo, hi].
std::vector<double> log_grid(double lo, double hi, int64_t count);

}  // namespace pae::metrics
