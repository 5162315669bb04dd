// Rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows") as free functions.
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>

namespace pae::flows {

/// Defaults from the paper and nflows.
inline constexpr double kMinBinWidth = 1e-3;
inline constexpr double kMinBinHeight = 1e-3;
inline constexpr double kMinDerivative = 1e-3;

struct SplineOptions {
  double tail_bound = 3.0;  ///< the spline covers [-B, B]; identity with unit slope outside
  double min_bin_width = kMinBinWidth;
  double min_bin_height = kMinBinHeight;
  double min_derivative = kMinDerivative;
};

/// Unconstrained spline value of the interior derivatives that gives slope exactly 1
/// (used for the boundary knots and for identity initialisation).
double identity_derivative_parameter(double min_derivative);

/// Element-wise monotone RQ spline with linear tails.
/// inputs:[...], widths/heights:[..., K], derivatives:[..., K-1] (unconstrained; the boundary
/// derivatives are fixed to 1 so the tails join smoothly). Returns (outputs, log|d out/d in|),
/// both shaped like inputs. inverse = true evaluates the inverse map (and its log-derivative).
/// Numerically guarded: inputs in the tails never enter the spline arithmetic, the inverse's
/// discriminant is clamped at zero, the quadratic uses the stable root 2c / (-b - sqrt(disc)).
std::pair<at::Tensor, at::Tensor> rational_quadratic_spline(const at::Tensor& inputs, const at::Tensor& widths,
                                                            const at::Tensor& heights, const at::Tensor& derivatives,
                                                            bool inverse, const SplineOptions& options = {});

/// The same spline with packed parameters params:[..., 3K-1] = [widths | heights | derivatives],
/// inputs:[...]. On CPU (float32/float64) it runs as one fused kernel per element, computed in
/// double, with a hand-derived backward for the forward direction (checked against autograd of
/// the function above in the tests); elsewhere, and for the inverse with gradients, it falls
/// back to the tensor implementation above. Not twice differentiable on the fused path.
std::pair<at::Tensor, at::Tensor> rational_quadratic_spline_packed(const at::Tensor& inputs, const at::Tensor& params,
                                                                   int64_t bins, bool inverse,
                                                                   const SplineOptions& options = {});

}  // namespace pae::flows
