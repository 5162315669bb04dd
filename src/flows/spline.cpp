#include "pae/flows/spline.h"

#include <torch/torch.h>

#include <cmath>

namespace pae::flows {

namespace F = torch::nn::functional;

double identity_derivative_parameter(double min_derivative) { return std::log(std::expm1(1.0 - min_derivative)); }

namespace {

/// Knot positions on [left, right] from unnormalised bin sizes: [..., K] -> [..., K+1].
/// The ends are set exactly (cumsum rounding would move them).
at::Tensor knots(const at::Tensor& unnormalised, double min_size, double left, double right) {
  const int64_t k = unnormalised.size(-1);
  auto sizes = torch::softmax(unnormalised, -1).mul(1 - min_size * double(k)).add(min_size);
  auto inner = torch::cumsum(sizes.narrow(-1, 0, k - 1), -1).mul(right - left).add(left);
  auto shape = inner.sizes().vec();
  shape.back() = 1;
  return torch::cat({torch::full(shape, left, inner.options()), inner, torch::full(shape, right, inner.options())}, -1);
}

}  // namespace

std::pair<at::Tensor, at::Tensor> rational_quadratic_spline(const at::Tensor& inputs, const at::Tensor& uw,
                                                            const at::Tensor& uh, const at::Tensor& ud, bool inverse,
                                                            const SplineOptions& o) {
  const int64_t k = uw.size(-1);
  TORCH_CHECK(uh.size(-1) == k && ud.size(-1) == k - 1, "rational_quadratic_spline: expected K widths, K heights and ",
              "K-1 derivatives, got ", uw.size(-1), ", ", uh.size(-1), ", ", ud.size(-1));
  TORCH_CHECK(o.min_bin_width * double(k) < 1 && o.min_bin_height * double(k) < 1,
              "rational_quadratic_spline: minimal bin width/height too large for ", k, " bins");
  const double b = o.tail_bound;
  const auto inside = (inputs >= -b).logical_and(inputs <= b);
  // Every element goes through the arithmetic on a clamped copy, and torch::where picks the
  // tail values: no boolean indexing (so "every input in the tails" is not a special case)
  // and no NaN from the unused branch, whose gradient would poison the used one.
  const auto x = inputs.clamp(-b, b);

  const auto cumw = knots(uw, o.min_bin_width, -b, b);
  const auto cumh = knots(uh, o.min_bin_height, -b, b);
  const auto widths = cumw.narrow(-1, 1, k) - cumw.narrow(-1, 0, k);
  const auto heights = cumh.narrow(-1, 1, k) - cumh.narrow(-1, 0, k);
  const double edge = identity_derivative_parameter(o.min_derivative);
  const auto derivs = o.min_derivative + F::softplus(F::pad(ud, F::PadFuncOptions({1, 1}).value(edge)));

  // Bin index: number of knots at or below x, minus one, kept in [0, K-1].
  const auto& locations = inverse ? cumh : cumw;
  auto idx = (x.unsqueeze(-1) >= locations).sum(-1, /*keepdim=*/true) - 1;
  idx = idx.clamp(0, k - 1);

  // One gather for the six per-bin quantities.
  const auto table = torch::stack({cumw.narrow(-1, 0, k), widths, cumh.narrow(-1, 0, k), heights,
                                   derivs.narrow(-1, 0, k), derivs.narrow(-1, 1, k)}, -2);  // [..., 6, K]
  auto idx6 = idx.unsqueeze(-2).expand(table.sizes().vec()).narrow(-1, 0, 1);
  const auto picked = table.gather(-1, idx6).squeeze(-1).unbind(-1);                       // 6 x [...]
  const auto &xk = picked[0], &wk = picked[1], &yk = picked[2], &hk = picked[3], &dk = picked[4], &dk1 = picked[5];
  const auto delta = hk / wk;
  const auto sum_d = dk + dk1 - 2 * delta;

  at::Tensor out, logdet;
  if (!inverse) {
    const auto theta = ((x - xk) / wk).clamp(0, 1);
    const auto t1t = theta * (1 - theta);
    const auto numerator = hk * (delta * theta.pow(2) + dk * t1t);
    const auto denominator = delta + sum_d * t1t;
    out = yk + numerator / denominator;
    const auto dnum = delta.pow(2) * (dk1 * theta.pow(2) + 2 * delta * t1t + dk * (1 - theta).pow(2));
    logdet = torch::log(dnum) - 2 * torch::log(denominator);
  } else {
    const auto dy = x - yk;
    const auto a = dy * sum_d + hk * (delta - dk);
    const auto bq = hk * dk - dy * sum_d;
    const auto c = -delta * dy;
    const auto disc = (bq.pow(2) - 4 * a * c).clamp_min(0);  // rounding can push it below zero
    const auto theta = ((2 * c) / (-bq - torch::sqrt(disc))).clamp(0, 1);
    out = theta * wk + xk;
    const auto t1t = theta * (1 - theta);
    const auto denominator = delta + sum_d * t1t;
    const auto dnum = delta.pow(2) * (dk1 * theta.pow(2) + 2 * delta * t1t + dk * (1 - theta).pow(2));
    logdet = -(torch::log(dnum) - 2 * torch::log(denominator));
  }
  return {torch::where(inside, out, inputs), torch::where(inside, logdet, torch::zeros_like(logdet))};
}

}  // namespace pae::flows
