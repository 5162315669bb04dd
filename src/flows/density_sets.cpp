#include "pae/flows/density_sets.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "pae/util/error.h"

namespace pae::flows {

namespace {

constexpr double kLog2Pi = 1.8378770664093453;
const auto kD = torch::TensorOptions().dtype(torch::kFloat64);

at::Generator generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

/// A random rotation (orthogonal, det +1) from the QR of a Gaussian matrix.
torch::Tensor rotation(int64_t d, at::Generator& g) {
  auto [q, r] = torch::linalg_qr(torch::randn({d, d}, g, kD));
  q = q * torch::sign(torch::diagonal(r)).unsqueeze(0);
  if (torch::det(q).item<double>() < 0) q.select(1, 0).neg_();
  return q;
}

/// A mixture of K diagonal Gaussians: weights, means [K,D], stds [K,D].
struct Mixture {
  torch::Tensor log_w, means, stds;
  Mixture(int64_t k, int64_t d, double spread, at::Generator& g) {
    log_w = torch::log_softmax(torch::randn({k}, g, kD) * 0.5, 0);
    means = torch::randn({k, d}, g, kD) * spread;
    stds = 0.3 + 0.7 * torch::rand({k, d}, g, kD);
  }
  torch::Tensor sample(int64_t n, at::Generator& g) const {
    const auto comp = torch::multinomial(log_w.exp(), n, true, g);
    return means.index_select(0, comp) + stds.index_select(0, comp) * torch::randn({n, means.size(1)}, g, kD);
  }
  torch::Tensor log_prob(const torch::Tensor& x) const {                       // x [N,D] -> [N]
    const auto z = (x.unsqueeze(1) - means.unsqueeze(0)) / stds.unsqueeze(0);  // [N,K,D]
    const auto per = -0.5 * z.pow(2).sum(2) - stds.log().sum(1).unsqueeze(0) - 0.5 * double(means.size(1)) * kLog2Pi;
    return torch::logsumexp(per + log_w.unsqueeze(0), 1);
  }
};

class MixtureSinh : public KnownDensity {
 public:
  MixtureSinh(int64_t d, uint64_t seed) : d_(d), g_(generator(seed)), mix_(8, d, 1.0, g_), q_(rotation(d, g_)) {}
  std::string name() const override { return "mixture_sinh"; }
  int64_t dim() const override { return d_; }
  // y = sinh(Q x): log p(y) = log p_x(Q^T asinh y) - sum_i log cosh(asinh y_i), cosh(asinh y) = sqrt(1 + y^2).
  at::Tensor sample(int64_t n, uint64_t seed) const override {
    auto g = generator(seed);
    return torch::sinh(mix_.sample(n, g).matmul(q_.t()));
  }
  at::Tensor log_prob(const at::Tensor& y) const override {
    const auto u = torch::asinh(y.to(torch::kFloat64));
    return mix_.log_prob(u.matmul(q_)) - 0.5 * torch::log1p(y.to(torch::kFloat64).pow(2)).sum(1);
  }

 private:
  int64_t d_;
  at::Generator g_;
  Mixture mix_;
  torch::Tensor q_;
};

class StudentT : public KnownDensity {
 public:
  StudentT(int64_t d, uint64_t seed) : d_(d), g_(generator(seed)) {
    df_ = 2.5 + 3.5 * torch::rand({d}, g_, kD);
    q_ = rotation(d, g_);
  }
  std::string name() const override { return "student_t"; }
  int64_t dim() const override { return d_; }
  // t = z / sqrt(v / df) with v ~ chi2(df) = 2 Gamma(df / 2); y = Q t.
  at::Tensor sample(int64_t n, uint64_t seed) const override {
    auto g = generator(seed);
    const auto z = torch::randn({n, d_}, g, kD);
    const auto v = 2 * torch::_standard_gamma(df_.unsqueeze(0).expand({n, d_}).contiguous() / 2, g);
    return (z / torch::sqrt(v / df_.unsqueeze(0))).matmul(q_.t());
  }
  at::Tensor log_prob(const at::Tensor& y) const override {
    const auto t = y.to(torch::kFloat64).matmul(q_);
    const auto nu = df_.unsqueeze(0);
    const auto per = torch::lgamma((nu + 1) / 2) - torch::lgamma(nu / 2) - 0.5 * torch::log(nu * M_PI) -
                     (nu + 1) / 2 * torch::log1p(t.pow(2) / nu);
    return per.sum(1);
  }

 private:
  int64_t d_;
  at::Generator g_;
  torch::Tensor df_, q_;
};

class Degenerate : public KnownDensity {
 public:
  static constexpr double kStd = 1e-3;
  Degenerate(int64_t d, uint64_t seed) : d_(d), g_(generator(seed)), mix_(4, d - 1, 1.0, g_) {}
  std::string name() const override { return "degenerate"; }
  int64_t dim() const override { return d_; }
  // x_{1..D-1} ~ mixture; x_D = tanh(x_1) + 1e-3 eps.
  at::Tensor sample(int64_t n, uint64_t seed) const override {
    auto g = generator(seed);
    const auto head = mix_.sample(n, g);
    const auto last = torch::tanh(head.select(1, 0)) + kStd * torch::randn({n}, g, kD);
    return torch::cat({head, last.unsqueeze(1)}, 1);
  }
  at::Tensor log_prob(const at::Tensor& x) const override {
    const auto xd = x.to(torch::kFloat64);
    const auto head = xd.slice(1, 0, d_ - 1);
    const auto r = (xd.select(1, d_ - 1) - torch::tanh(xd.select(1, 0))) / kStd;
    return mix_.log_prob(head) - 0.5 * r.pow(2) - std::log(kStd) - 0.5 * kLog2Pi;
  }

 private:
  int64_t d_;
  at::Generator g_;
  Mixture mix_;
};

class Gaussian : public KnownDensity {
 public:
  Gaussian(int64_t d, uint64_t seed) : d_(d), g_(generator(seed)) {
    // Covariance Q diag(s^2) Q^T with scales from 0.2 to 3.
    scale_ = 0.2 + 2.8 * torch::rand({d}, g_, kD);
    q_ = rotation(d, g_);
  }
  std::string name() const override { return "gaussian"; }
  int64_t dim() const override { return d_; }
  at::Tensor sample(int64_t n, uint64_t seed) const override {
    auto g = generator(seed);
    return (torch::randn({n, d_}, g, kD) * scale_.unsqueeze(0)).matmul(q_.t());
  }
  at::Tensor log_prob(const at::Tensor& x) const override {
    const auto z = x.to(torch::kFloat64).matmul(q_) / scale_.unsqueeze(0);
    return -0.5 * z.pow(2).sum(1) - scale_.log().sum() - 0.5 * double(d_) * kLog2Pi;
  }

 private:
  int64_t d_;
  at::Generator g_;
  torch::Tensor scale_, q_;
};

/// Three concentric rings: radius ~ N(r_k, 0.1^2) with weights w_k, angle uniform; the density of
/// a point is sum_k w_k N(|x|; r_k, 0.1^2) / (2 pi |x|) (the mass a ring puts below radius 0 is
/// under 1e-20 for radii >= 1).
class Rings : public KnownDensity {
 public:
  std::string name() const override { return "rings"; }
  int64_t dim() const override { return 2; }
  at::Tensor sample(int64_t n, uint64_t seed) const override {
    auto g = generator(seed);
    const auto comp = torch::multinomial(weights(), n, true, g);
    const auto r = radii().index_select(0, comp) + kWidth * torch::randn({n}, g, kD);
    const auto a = 2 * M_PI * torch::rand({n}, g, kD);
    return torch::stack({r * torch::cos(a), r * torch::sin(a)}, 1);
  }
  at::Tensor log_prob(const at::Tensor& x) const override {
    const auto r = x.to(torch::kFloat64).norm(2, 1);
    const auto z = (r.unsqueeze(1) - radii().unsqueeze(0)) / kWidth;
    const auto per = -0.5 * z.pow(2) - std::log(kWidth) - 0.5 * kLog2Pi + weights().log().unsqueeze(0);
    return torch::logsumexp(per, 1) - torch::log(2 * M_PI * r);
  }

 private:
  static constexpr double kWidth = 0.1;
  static torch::Tensor radii() { return torch::tensor({1.0, 2.0, 3.0}, kD); }
  static torch::Tensor weights() { return torch::tensor({0.2, 0.3, 0.5}, kD); }
};

/// Two elongated Gaussians rotated by 1.5 rad per unit of radius: x -> R(1.5 |x|) x keeps |x|
/// and areas (Jacobian determinant 1), so log p(y) = log p_x(R(-1.5 |y|) y).
class Swirl : public KnownDensity {
 public:
  std::string name() const override { return "swirl"; }
  int64_t dim() const override { return 2; }
  at::Tensor sample(int64_t n, uint64_t seed) const override {
    auto g = generator(seed);
    return rotate(base().sample(n, g), 1.0);
  }
  at::Tensor log_prob(const at::Tensor& y) const override {
    return base().log_prob(rotate(y.to(torch::kFloat64), -1.0));
  }

 private:
  static Mixture base() {
    auto g = generator(7);
    Mixture m(2, 2, 1.0, g);
    m.log_w = torch::log(torch::tensor({0.5, 0.5}, kD));
    m.means = torch::tensor({{1.5, 0.0}, {-1.5, 0.0}}, kD);
    m.stds = torch::tensor({{1.0, 0.15}, {1.0, 0.15}}, kD);
    return m;
  }
  static torch::Tensor rotate(const torch::Tensor& x, double sign) {
    const auto a = sign * 1.5 * x.norm(2, 1);
    const auto c = torch::cos(a), s = torch::sin(a);
    const auto x0 = x.select(1, 0), x1 = x.select(1, 1);
    return torch::stack({c * x0 - s * x1, s * x0 + c * x1}, 1);
  }
};

}  // namespace

std::vector<std::string> density_set_names(int64_t dim) {
  std::vector<std::string> names = {"mixture_sinh", "student_t", "degenerate", "gaussian"};
  if (dim == 2) names.insert(names.begin(), {"rings", "swirl"});
  return names;
}

std::unique_ptr<KnownDensity> make_density(const std::string& name, int64_t dim, uint64_t seed) {
  require(dim >= 2 && dim <= 1024, "density set: dimension " + std::to_string(dim) + " is outside [2, 1024]");
  const auto names = density_set_names(dim);
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    throw Error("density set '" + name + "': unknown in " + std::to_string(dim) + " dimensions; valid: " + list);
  }
  if (name == "mixture_sinh") return std::make_unique<MixtureSinh>(dim, seed);
  if (name == "student_t") return std::make_unique<StudentT>(dim, seed);
  if (name == "degenerate") return std::make_unique<Degenerate>(dim, seed);
  if (name == "gaussian") return std::make_unique<Gaussian>(dim, seed);
  if (name == "rings") return std::make_unique<Rings>();
  return std::make_unique<Swirl>();
}

}  // namespace pae::flows
