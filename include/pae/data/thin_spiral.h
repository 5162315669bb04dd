// The thin spiral of the DNF paper (Horvat & Pfister 2021, after Brehmer & Cranmer 2020): a 1-D
// manifold in 2-D whose density along the curve is known. A latent u ~ Exp(scale 0.3) sets the
// position z = 3 pi sqrt(u) along the spiral, and x = (-z cos z, z sin z) / 3.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace pae::data {

struct ThinSpiral {
  static constexpr double kScale = 0.3;  ///< of the exponential latent

  /// n points [n, 2] float64 from the generator seeded with `seed`; their positions z [n] in `z`
  /// when given.
  static at::Tensor sample(int64_t n, uint64_t seed, at::Tensor* z = nullptr);
  /// The point of the spiral at position z [n]: [n, 2].
  static at::Tensor point(const at::Tensor& z);
  /// log of the true density of the position z along the spiral (Exp(0.3) pulled through
  /// z = 3 pi sqrt(u)): log(2 z / (0.3 (3 pi)^2)) - (z / 3 pi)^2 / 0.3, for z > 0.
  static at::Tensor log_density_of_position(const at::Tensor& z);
};

}  // namespace pae::data
