// Synthetic distributions whose log-density is known in closed form: the yardstick of how far a
// fitted flow is from the truth (pae-bench density). Each samples with its own seeded generator
// and evaluates log p exactly (in float64).
//   mixture_sinh   an 8-component Gaussian mixture, rotated, pushed through sinh element-wise
//   student_t      independent Student-t marginals (df 2.5-6), rotated
//   degenerate     a Gaussian mixture in D-1 dimensions and one more that is a nonlinear function
//                  of the first plus noise of std 1e-3 (nearly degenerate)
//   gaussian       a correlated Gaussian (the full-covariance Gaussian baseline is exact)
//   rings, swirl   2-D only: three concentric rings; a two-armed spiral (a Gaussian mixture
//                  rotated by an angle growing with the radius, an area-preserving map)
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pae::flows {

class KnownDensity {
 public:
  virtual ~KnownDensity() = default;
  virtual std::string name() const = 0;
  virtual int64_t dim() const = 0;
  /// n samples [n, dim] float64, from the generator seeded with `seed`.
  virtual at::Tensor sample(int64_t n, uint64_t seed) const = 0;
  /// log p(x) in nats, [n] float64.
  virtual at::Tensor log_prob(const at::Tensor& x) const = 0;
};

/// The sets defined in `dim` dimensions (rings and swirl only in 2).
std::vector<std::string> density_set_names(int64_t dim);

/// The set `name` in `dim` dimensions; its parameters (means, rotation, degrees of freedom) are
/// drawn from `seed`. Errors name the set and the valid names.
std::unique_ptr<KnownDensity> make_density(const std::string& name, int64_t dim, uint64_t seed = 0);

}  // namespace pae::flows
