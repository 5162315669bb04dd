#include "pae/data/thin_spiral.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>

namespace pae::data {

namespace {
constexpr double kTurn = 3 * M_PI;  // z = kTurn sqrt(u)
}

at::Tensor ThinSpiral::sample(int64_t n, uint64_t seed, at::Tensor* z) {
  auto gen = at::detail::createCPUGenerator(seed);
  // Exp(scale) by inversion of a uniform draw of our own generator: the same on every version.
  const auto uniform = torch::rand({n}, gen, torch::kFloat64);
  const auto u = -kScale * torch::log1p(-uniform);
  const auto position = kTurn * u.sqrt();
  if (z != nullptr) *z = position;
  return point(position);
}

at::Tensor ThinSpiral::point(const at::Tensor& z) { return torch::stack({-z * z.cos(), z * z.sin()}, 1) / 3.0; }

at::Tensor ThinSpiral::log_density_of_position(const at::Tensor& z) {
  // u = (z / kTurn)^2, du/dz = 2 z / kTurn^2, p(u) = exp(-u / kScale) / kScale.
  return (2 * z / (kScale * kTurn * kTurn)).log() - (z / kTurn).pow(2) / kScale;
}

}  // namespace pae::data
