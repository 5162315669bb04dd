// The affine coupling with an MLP conditioner as one autograd node: what AffineCoupling runs on
// the CPU (pae/flows/flow.h), exposed for its tests.
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

namespace pae::flows::fused {

/// Where a coupling's halves lie in x:[B,D]: the identity (conditioning) columns
/// [identity_begin, identity_begin + n_identity) and the transformed ones [transformed_begin, +D - n_identity).
struct CouplingColumns {
  int64_t identity_begin = 0, n_identity = 0, transformed_begin = 0;
};

/// Whether affine_coupling_mlp takes x and the layers: CPU, float or double throughout,
/// contiguous, the process's BLAS at hand, at least one conditioning column.
bool fused_affine_applies(const at::Tensor& x, const std::vector<at::Tensor>& layers, const CouplingColumns& c);

/// The affine coupling's forward map, y_t = x_t e^l + t with (t, h) = MLP(x_i) interleaved per
/// transformed feature and l = 3 tanh(h / 3); y_i = x_i; log|det| = sum l. `layers` = W1, b1, ...,
/// Wn, bn (ReLU after every layer but the last). One forward pass over blocks of rows, one
/// backward pass over blocks of rows and one over blocks of output features: one autograd node
/// and three parallel regions per coupling instead of a dozen operations each way. Returns (y,
/// log|det|:[B]); its gradient is differentiable again (then computed from tensor operations).
std::pair<at::Tensor, at::Tensor> affine_coupling_mlp(const at::Tensor& x, const std::vector<at::Tensor>& layers,
                                                      const CouplingColumns& c);

/// The same map from LibTorch operations (the reference the fused node is tested against and
/// its differentiable backward).
std::pair<at::Tensor, at::Tensor> affine_coupling_reference(const at::Tensor& x, const std::vector<at::Tensor>& layers,
                                                            const CouplingColumns& c);

}  // namespace pae::flows::fused
