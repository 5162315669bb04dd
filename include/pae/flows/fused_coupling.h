// A coupling (affine or rational-quadratic spline) with an MLP conditioner as one autograd node:
// what AffineCoupling and SplineCoupling run on the CPU (pae/flows/flow.h), exposed for tests.
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

#include "pae/flows/spline.h"

namespace pae::flows::fused {

/// Where a coupling's halves lie in x:[B,D] and what transforms the second: the identity
/// (conditioning) columns [identity_begin, identity_begin + n_identity), the transformed ones
/// [transformed_begin, + D - n_identity); `bins` 0: affine, y = x e^l + t with (t, h) per
/// feature and l = 3 tanh(h / 3); else the rational-quadratic spline of `bins` bins with its
/// packed 3 bins - 1 parameters per feature and options `spline`.
struct CouplingSpec {
  int64_t identity_begin = 0, n_identity = 0, transformed_begin = 0;
  int64_t bins = 0;
  SplineOptions spline;
  /// Inverted dropout on every hidden layer's output (training): the masks drawn from the default
  /// generator in layer order before the passes, as the separate operations draw them.
  double dropout = 0;
  int64_t params_per_feature() const { return bins == 0 ? 2 : 3 * bins - 1; }
};

/// Whether coupling_mlp takes x and the layers: CPU, float or double throughout, contiguous,
/// the process's BLAS at hand, at least one conditioning column.
bool applies(const at::Tensor& x, const std::vector<at::Tensor>& layers, const CouplingSpec& s);

/// The coupling's forward map (data to noise): y_i = x_i, y_t = f(x_t; MLP(x_i)), log|det| per
/// row. `layers` = W1, b1, ..., Wn, bn (ReLU after every layer but the last). One forward pass
/// over blocks of rows, one backward pass over blocks of rows and one over blocks of output
/// features: one autograd node and three parallel regions per coupling instead of a dozen
/// operations each way. Returns (y, log|det|:[B]); its gradient is differentiable again (then
/// computed from tensor operations).
std::pair<at::Tensor, at::Tensor> coupling_mlp(const at::Tensor& x, const std::vector<at::Tensor>& layers,
                                               const CouplingSpec& s);

/// The same map from LibTorch operations (the reference the fused node is tested against and
/// its differentiable backward); with dropout, `masks` (scaled keep masks, one per hidden layer)
/// or, when null, masks drawn as torch::dropout draws them.
std::pair<at::Tensor, at::Tensor> coupling_reference(const at::Tensor& x, const std::vector<at::Tensor>& layers,
                                                     const CouplingSpec& s,
                                                     const std::vector<at::Tensor>* masks = nullptr);

// The spline's kernels on contiguous rows (spline.cpp): x, y, ld:[N], p:[N, 3K-1]; `kept`
// (float only, else null): [N, spline_kept_stride(K)] doubles that the forward keeps for the
// backward, which then needs no transcendental call.
int64_t spline_kept_stride(int64_t bins);
void spline_forward_rows(const at::Tensor& x, const at::Tensor& p, int64_t bins, const SplineOptions& o, at::Tensor& y,
                         at::Tensor& ld, double* kept);
void spline_backward_rows(const at::Tensor& x, const at::Tensor& p, const at::Tensor& gy, const at::Tensor& gl,
                          int64_t bins, const SplineOptions& o, at::Tensor& gx, at::Tensor& gp, const double* kept);

}  // namespace pae::flows::fused
