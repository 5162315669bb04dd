#include "pae/flows/spline.h"

#include <torch/torch.h>

#include <cmath>

namespace pae::flows {

namespace F = torch::nn::functional;

double identity_derivative_parameter(double min_derivative) { return std::log(std::expm1(1.0 - min_derivative)); }

namespace {

/// Knot positions on [left, right] from unnormalised bin sizes: [..., K] -> [..., K+1].
at::Tensor knots(const at::Tensor& unnormalised, double min_size, double left, double right) {
  const int64_t k = unnormalised.size(-1);
  auto sizes = torch::softmax(unnormalised, -1);
  sizes = min_size + (1 - min_size * double(k)) * sizes;
  auto cum = F::pad(torch::cumsum(sizes, -1), F::PadFuncOptions({1, 0}).value(0.0));
  cum = (right - left) * cum + left;
  // Pin the ends exactly (cumsum rounding would move them).
  auto idx = torch::arange(k + 1, cum.options().dtype(torch::kLong));
  cum = torch::where(idx == 0, torch::full_like(cum, left), torch::where(idx == k, torch::full_like(cum, right), cum));
  return cum;
}

at::Tensor gather_last(const at::Tensor& t, const at::Tensor& idx) { return t.gather(-1, idx).squeeze(-1); }

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

  const auto xk = gather_last(cumw, idx), wk = gather_last(widths, idx);
  const auto yk = gather_last(cumh, idx), hk = gather_last(heights, idx);
  const auto dk = gather_last(derivs, idx), dk1 = gather_last(derivs, idx + 1);
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
