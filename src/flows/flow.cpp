#include "pae/flows/flow.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <random>

#include "pae/flows/fused_coupling.h"
#include "pae/nn/dense.h"
#include "pae/util/error.h"

namespace pae::flows {

namespace nn = torch::nn;
using pae::nn::Dense;

namespace {
/// PAE_FUSED_COUPLING=0 runs the couplings' separate operations instead of the fused node (A/B benchmarks).
bool fused_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("PAE_FUSED_COUPLING");
    return !(v && std::string(v) == "0");
  }();
  return on;
}
}  // namespace

// ---------------------------------------------------------------- composite and flow

void CompositeTransform::append(std::shared_ptr<Transform> t) {
  transforms_.push_back(register_module(std::to_string(transforms_.size()), std::move(t)));
}

TensorPair CompositeTransform::forward(const torch::Tensor& x) {
  auto z = x;
  auto logdet = torch::zeros({x.size(0)}, x.options());
  for (auto& t : transforms_) {
    auto [out, ld] = t->forward(z);
    z = out;
    logdet = logdet + ld;
  }
  return {z, logdet};
}

TensorPair CompositeTransform::inverse(const torch::Tensor& z) {
  auto x = z;
  auto logdet = torch::zeros({z.size(0)}, z.options());
  for (auto it = transforms_.rbegin(); it != transforms_.rend(); ++it) {
    auto [out, ld] = (*it)->inverse(x);
    x = out;
    logdet = logdet + ld;
  }
  return {x, logdet};
}

void CompositeTransform::initialize(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  auto h = x;
  for (auto& t : transforms_) {
    t->initialize(h);
    h = t->forward(h).first;
  }
}

Flow::Flow(int64_t dim, std::shared_ptr<Transform> transform) : dim_(dim) {
  transform_ = register_module("transform", std::move(transform));
}

torch::Tensor Flow::log_prob(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == dim_, "Flow::log_prob: expected [B,", dim_, "], got ", x.sizes());
  auto [z, logdet] = transform_->forward(x);
  const double log2pi = std::log(2 * M_PI);
  return -0.5 * (z.pow(2).sum(1) + double(dim_) * log2pi) + logdet;
}

torch::Tensor Flow::sample(int64_t n, double temperature) {
  const auto params = parameters();
  auto opts = params.empty() ? torch::TensorOptions() : params.front().options();
  return transform_->inverse(torch::randn({n, dim_}, opts) * temperature).first;
}

// ---------------------------------------------------------------- conditioners

namespace {

/// Maps the identity half of the features to the transform's parameters. The last layer
/// starts at zero (weights and biases), so its output is zero until training moves it.
class Conditioner : public nn::Module {
 public:
  Conditioner(int64_t in, int64_t out, const FlowOptions& o) : in_(in) {
    const int64_t width = std::max<int64_t>(o.hidden, 1);
    input_ = register_module("input", Dense(std::max<int64_t>(in, 1), width));
    for (int64_t i = 0; i < o.hidden_layers - 1 || (o.conditioner == "resnet" && i < o.hidden_layers); ++i) {
      if (o.conditioner == "resnet") {
        blocks_a_.push_back(register_module("block" + std::to_string(i) + "a", Dense(width, width)));
        blocks_b_.push_back(register_module("block" + std::to_string(i) + "b", Dense(width, width)));
      } else {
        blocks_a_.push_back(register_module("hidden" + std::to_string(i), Dense(width, width)));
      }
    }
    resnet_ = o.conditioner == "resnet";
    dropout_ = o.dropout;
    output_ = register_module("output", Dense(width, out));
    torch::NoGradGuard no_grad;
    output_->weight.zero_();
    output_->bias.zero_();
  }

  torch::Tensor forward(const torch::Tensor& x) {
    // A 1-D flow has nothing to condition on: a constant input makes the parameters learned constants.
    auto h = input_->forward_relu(in_ > 0 ? x : torch::zeros({x.size(0), 1}, x.options()));
    const bool drop = dropout_ > 0 && is_training();
    for (size_t i = 0; i < blocks_a_.size(); ++i) {
      if (drop) h = torch::dropout(h, dropout_, true);
      if (resnet_)
        h = h + blocks_b_[i](blocks_a_[i]->forward_relu(torch::relu(h)));
      else
        h = blocks_a_[i]->forward_relu(h);
    }
    if (drop) h = torch::dropout(h, dropout_, true);
    return output_(h);
  }
  double active_dropout() const { return is_training() ? dropout_ : 0.0; }
  Dense& output_layer() { return output_; }
  void set_dropout(double p) { dropout_ = p; }
  /// W1, b1, ..., Wn, bn of a plain MLP (no residual blocks, an input to condition on), whose
  /// hidden layers' outputs pass a ReLU and then dropout at active_dropout(); else empty.
  std::vector<torch::Tensor> mlp_layers() const {
    if (resnet_ || in_ == 0) return {};
    std::vector<torch::Tensor> out = {input_->weight, input_->bias};
    for (const auto& b : blocks_a_) out.insert(out.end(), {b->weight, b->bias});
    out.insert(out.end(), {output_->weight, output_->bias});
    return out;
  }

 private:
  int64_t in_;
  bool resnet_ = false;
  double dropout_ = 0;
  Dense input_{nullptr}, output_{nullptr};
  std::vector<Dense> blocks_a_, blocks_b_;
};

/// Feature split of a coupling: one contiguous half conditions, the other is transformed;
/// layer parity alternates which. D = 1 transforms its only feature unconditionally.
/// (Contiguous halves are views: cheaper than index lists, and the permutations between
/// couplings mix the features.)
class Coupling : public Transform {
 public:
  Coupling(int64_t dim, int64_t layer, int64_t params_per_feature, const FlowOptions& o) : dim_(dim) {
    per_ = params_per_feature;
    const int64_t first = dim / 2;  // size of the first half
    identity_first_ = dim > 1 && layer % 2 == 0;
    n_identity_ = dim == 1 ? 0 : (identity_first_ ? first : dim - first);
    conditioner_ =
        register_module("conditioner", std::make_shared<Conditioner>(n_identity_, (dim - n_identity_) * per_, o));
  }
  TensorPair forward(const torch::Tensor& x) override { return apply(x, false); }
  TensorPair inverse(const torch::Tensor& z) override { return apply(z, true); }

 protected:
  /// The conditioner and the element-wise map as one autograd node where it applies (CPU, an
  /// MLP conditioner, the process's BLAS): fewer operations to dispatch.
  /// `bins` 0: the affine map, else the spline's (pae/flows/fused_coupling.h).
  TensorPair fused_or_separate(const torch::Tensor& x, int64_t bins, const SplineOptions& spline) {
    if (fused_enabled()) {
      const auto layers = conditioner_->mlp_layers();
      const int64_t nt = dim_ - n_identity_;
      fused::CouplingSpec s{identity_first_ ? 0 : nt,      n_identity_, identity_first_ ? n_identity_ : 0, bins, spline,
                            conditioner_->active_dropout()};
      if (!layers.empty() && fused::applies(x, layers, s)) return fused::coupling_mlp(x, layers, s);
    }
    return apply(x, false);
  }
  /// Element-wise transform of xt:[B,T] with params:[B,T,P].
  virtual TensorPair transform(const torch::Tensor& xt, const torch::Tensor& params, bool inverse) = 0;
  std::shared_ptr<Conditioner> conditioner_;
  int64_t per_;

 private:
  TensorPair apply(const torch::Tensor& x, bool inverse) {
    TORCH_CHECK(x.dim() == 2 && x.size(1) == dim_, "coupling: expected [B,", dim_, "], got ", x.sizes());
    const int64_t nt = dim_ - n_identity_;
    auto xi = identity_first_ ? x.narrow(1, 0, n_identity_) : x.narrow(1, nt, n_identity_);
    auto xt = identity_first_ ? x.narrow(1, n_identity_, nt) : x.narrow(1, 0, nt);
    auto params = conditioner_->forward(xi).view({x.size(0), nt, per_});
    auto [yt, logdet] = transform(xt, params, inverse);
    auto y = n_identity_ == 0 ? yt : identity_first_ ? torch::cat({xi, yt}, 1) : torch::cat({yt, xi}, 1);
    return {y, logdet.sum(1)};
  }
  int64_t dim_, n_identity_;
  bool identity_first_;
};

/// The affine coupling's forward map, y = x e^l + t with l = 3 tanh(h / 3), and its log-slopes l,
/// from x:[N] and packed parameters p:[N,2] = (t, h), in one loop each way (LibTorch's version is
/// eight element-wise operations forward and twelve backward, each a pass and a dispatch).
/// CPU float/double only; a gradient that is itself differentiated is built from tensor operations.
struct AffineForward : public torch::autograd::Function<AffineForward> {
  static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                                              const torch::Tensor& p) {
    auto y = torch::empty_like(x), l = torch::empty_like(x), e = torch::empty_like(x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "affine_forward", [&] {
      const auto *xs = x.data_ptr<scalar_t>(), *ps = p.data_ptr<scalar_t>();
      auto *ys = y.data_ptr<scalar_t>(), *ls = l.data_ptr<scalar_t>(), *es = e.data_ptr<scalar_t>();
      at::parallel_for(0, x.numel(), 1024, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const scalar_t li = scalar_t(3) * std::tanh(ps[2 * i + 1] / scalar_t(3));
          ls[i] = li;
          es[i] = std::exp(li);
          ys[i] = xs[i] * es[i] + ps[2 * i];
        }
      });
    });
    ctx->save_for_backward({x, l, e});
    return {y, l};
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &l = saved[1], &e = saved[2];
    auto gy = grads[0].defined() ? grads[0].contiguous() : torch::zeros_like(x);
    auto gl = grads[1].defined() ? grads[1].contiguous() : torch::zeros_like(x);
    if (torch::GradMode::is_enabled()) {  // differentiable: dl/dh = 1 - (l / 3)^2, e = exp(l)
      const auto el = torch::exp(l);
      const auto gh = (gy * x * el + gl) * (1 - (l / 3).pow(2));
      return {gy * el, torch::stack({gy, gh}, -1)};
    }
    auto p_sizes = x.sizes().vec();
    p_sizes.push_back(2);
    auto gx = torch::empty_like(x), gp = torch::empty(p_sizes, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "affine_backward", [&] {
      const auto *xs = x.data_ptr<scalar_t>(), *ls = l.data_ptr<scalar_t>(), *es = e.data_ptr<scalar_t>(),
                 *gys = gy.data_ptr<scalar_t>(), *gls = gl.data_ptr<scalar_t>();
      auto *gxs = gx.data_ptr<scalar_t>(), *gps = gp.data_ptr<scalar_t>();
      at::parallel_for(0, x.numel(), 1024, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const scalar_t e = es[i], t = ls[i] / scalar_t(3);
          gxs[i] = gys[i] * e;
          gps[2 * i] = gys[i];
          gps[2 * i + 1] = (gys[i] * xs[i] * e + gls[i]) * (scalar_t(1) - t * t);
        }
      });
    });
    return {gx, gp};
  }
};

/// RealNVP affine coupling (Dinh et al. 2017): z = x * s + t with s = exp(3 tanh(h / 3)):
/// bounded scales (stable), exactly the identity at initialisation, unit gradient there.
class AffineCoupling : public Coupling {
 public:
  AffineCoupling(int64_t dim, int64_t layer, const FlowOptions& o) : Coupling(dim, layer, 2, o) {}
  TensorPair forward(const torch::Tensor& x) override { return fused_or_separate(x, 0, {}); }

 protected:
  TensorPair transform(const torch::Tensor& xt, const torch::Tensor& p, bool inverse) override {
    const bool fused = !inverse && xt.device().is_cpu() && xt.scalar_type() == p.scalar_type() &&
                       (xt.scalar_type() == torch::kFloat || xt.scalar_type() == torch::kDouble);
    if (fused) {
      auto out = AffineForward::apply(xt.contiguous(), p.contiguous());
      return {out[0], out[1]};
    }
    auto shift = p.select(2, 0);
    auto log_scale = 3.0 * torch::tanh(p.select(2, 1) / 3.0);
    if (!inverse) return {xt * torch::exp(log_scale) + shift, log_scale};
    return {(xt - shift) * torch::exp(-log_scale), -log_scale};
  }
};

/// Rational-quadratic spline coupling (Durkan et al. 2019) with linear tails.
class SplineCoupling : public Coupling {
 public:
  SplineCoupling(int64_t dim, int64_t layer, const FlowOptions& o)
      : Coupling(dim, layer, 3 * o.bins - 1, o), bins_(o.bins) {
    spline_.tail_bound = o.tail_bound;
    spline_.min_bin_width = o.min_bin_width;
    spline_.min_bin_height = o.min_bin_height;
    spline_.min_derivative = o.min_derivative;
    // Identity at initialisation: equal bins and unit interior derivatives.
    torch::NoGradGuard no_grad;
    auto bias = conditioner_->output_layer()->bias.view({-1, per_});
    bias.narrow(1, 2 * bins_, bins_ - 1).fill_(identity_derivative_parameter(o.min_derivative));
  }
  TensorPair forward(const torch::Tensor& x) override { return fused_or_separate(x, bins_, spline_); }

 protected:
  TensorPair transform(const torch::Tensor& xt, const torch::Tensor& p, bool inverse) override {
    return rational_quadratic_spline_packed(xt, p, bins_, inverse, spline_);
  }

 private:
  int64_t bins_;
  SplineOptions spline_;
};

/// x[:, perm] whose backward is the gather by the inverse permutation (LibTorch's index_select
/// backward allocates zeros and scatters into them: two passes and an allocation more).
struct PermuteColumns : public torch::autograd::Function<PermuteColumns> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& perm,
                               const torch::Tensor& inverse) {
    ctx->save_for_backward({inverse, perm});
    return x.index_select(1, perm);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();  // differentiable: the inverse is again a gather
    return {PermuteColumns::apply(grads[0], saved[0], saved[1]), torch::Tensor(), torch::Tensor()};
  }
};

/// A fixed permutation of the features (reverse, or random from a seed).
class Permutation : public Transform {
 public:
  explicit Permutation(std::vector<int64_t> perm) {
    std::vector<int64_t> inv(perm.size());
    for (size_t i = 0; i < perm.size(); ++i) inv[size_t(perm[i])] = int64_t(i);
    perm_ = torch::tensor(perm, torch::kLong);  // not buffers: see Coupling
    inv_ = torch::tensor(inv, torch::kLong);
  }
  TensorPair forward(const torch::Tensor& x) override {
    if (perm_.device() != x.device()) perm_ = perm_.to(x.device()), inv_ = inv_.to(x.device());
    return {PermuteColumns::apply(x, perm_, inv_), torch::zeros({x.size(0)}, x.options())};
  }
  TensorPair inverse(const torch::Tensor& z) override {
    if (perm_.device() != z.device()) perm_ = perm_.to(z.device()), inv_ = inv_.to(z.device());
    return {PermuteColumns::apply(z, inv_, perm_), torch::zeros({z.size(0)}, z.options())};
  }

 private:
  torch::Tensor perm_, inv_;
};

std::vector<int64_t> reversed(int64_t dim) {
  std::vector<int64_t> p(static_cast<size_t>(dim));
  for (int64_t i = 0; i < dim; ++i) p[size_t(i)] = dim - 1 - i;
  return p;
}

uint64_t permutation_seed(const FlowOptions& o, int64_t layer) { return o.seed * 7919 + uint64_t(layer); }

std::vector<int64_t> shuffled(int64_t dim, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(dim));
  for (int64_t i = 0; i < dim; ++i) p[size_t(i)] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = dim - 1; i > 0; --i) std::swap(p[size_t(i)], p[size_t(rng() % uint64_t(i + 1))]);
  return p;
}

/// Trainable linear map z = W x + b with W = P L U (Kingma & Dhariwal 2018): L unit lower,
/// U upper with diagonal sign * exp(log_diag); log|det| = sum(log_diag). Starts at identity.
class LULinear : public Transform {
 public:
  LULinear(int64_t dim, uint64_t seed) : dim_(dim) {
    auto perm = shuffled(dim, seed);
    auto p = torch::zeros({dim, dim});
    for (int64_t i = 0; i < dim; ++i) p[i][perm[size_t(i)]] = 1.0;
    perm_ = register_buffer("permutation", p);
    lower_ = register_parameter("lower", torch::zeros({dim, dim}));
    upper_ = register_parameter("upper", torch::zeros({dim, dim}));
    log_diag_ = register_parameter("log_diag", torch::zeros({dim}));
    bias_ = register_parameter("bias", torch::zeros({dim}));
  }
  TensorPair forward(const torch::Tensor& x) override {
    auto [l, u] = factors(x);
    // Row form z^T = x^T U^T L^T P^T, one factor at a time (B D^2 per product; forming W = P L U
    // costs 2 D^3 per call: the DNF on 784 pixels trained at 153 images/s that way, 200 this way).
    // P has its one in row i at column perm[i], so multiplying by P^T gathers columns perm[i].
    auto y = torch::matmul(torch::matmul(x, u.t()), l.t());
    auto z = y.index_select(1, perm_.argmax(1).to(x.device())) + bias_;
    return {z, log_diag_.sum().expand({x.size(0)})};
  }
  TensorPair inverse(const torch::Tensor& z) override {
    auto [l, u] = factors(z);
    // x = U^-1 L^-1 P^T (z - b), solved on columns: rhs [D, B].
    auto rhs = torch::matmul(perm_.to(z).t(), (z - bias_).t());
    auto y = torch::linalg_solve_triangular(l, rhs, /*upper=*/false, /*left=*/true, /*unitriangular=*/true);
    auto x = torch::linalg_solve_triangular(u, y, /*upper=*/true, /*left=*/true, /*unitriangular=*/false);
    return {x.t(), (-log_diag_.sum()).expand({z.size(0)})};
  }

 private:
  std::pair<torch::Tensor, torch::Tensor> factors(const torch::Tensor& like) {
    auto eye = torch::eye(dim_, like.options());
    auto l = torch::tril(lower_, -1) + eye;
    auto u = torch::triu(upper_, 1) + torch::diag(torch::exp(log_diag_));
    return {l, u};
  }
  int64_t dim_;
  torch::Tensor perm_, lower_, upper_, log_diag_, bias_;
};

/// ActNorm (Kingma & Dhariwal 2018): z = (x + bias) * exp(log_scale), initialised from the
/// first batch so that z has zero mean and unit variance per feature.
class ActNorm : public Transform {
 public:
  explicit ActNorm(int64_t dim) {
    bias_ = register_parameter("bias", torch::zeros({dim}));
    log_scale_ = register_parameter("log_scale", torch::zeros({dim}));
  }
  void initialize(const torch::Tensor& x) override {
    torch::NoGradGuard no_grad;
    bias_.copy_(-x.mean(0));
    log_scale_.copy_(-torch::log(x.std(0) + 1e-6));
  }
  TensorPair forward(const torch::Tensor& x) override {
    return {(x + bias_) * torch::exp(log_scale_), log_scale_.sum().expand({x.size(0)})};
  }
  TensorPair inverse(const torch::Tensor& z) override {
    return {z * torch::exp(-log_scale_) - bias_, (-log_scale_.sum()).expand({z.size(0)})};
  }

 private:
  torch::Tensor bias_, log_scale_;
};

/// Batch normalisation as a flow layer (Dinh et al. 2017): batch statistics while training,
/// running averages in evaluation (and always for the inverse).
class BatchNormFlow : public Transform {
 public:
  explicit BatchNormFlow(int64_t dim, double momentum = 0.05, double eps = 1e-5) : momentum_(momentum), eps_(eps) {
    log_gamma_ = register_parameter("log_gamma", torch::zeros({dim}));
    beta_ = register_parameter("beta", torch::zeros({dim}));
    mean_ = register_buffer("running_mean", torch::zeros({dim}));
    var_ = register_buffer("running_var", torch::ones({dim}));
  }
  TensorPair forward(const torch::Tensor& x) override {
    torch::Tensor mean, var;
    if (is_training() && x.size(0) > 1) {
      mean = x.mean(0);
      var = x.var(0, /*unbiased=*/false);
      torch::NoGradGuard no_grad;
      mean_.mul_(1 - momentum_).add_(mean.detach() * momentum_);
      var_.mul_(1 - momentum_).add_(var.detach() * momentum_);
    } else {
      mean = mean_;
      var = var_;
    }
    auto z = (x - mean) / torch::sqrt(var + eps_) * torch::exp(log_gamma_) + beta_;
    auto ld = (log_gamma_ - 0.5 * torch::log(var + eps_)).sum().expand({x.size(0)});
    return {z, ld};
  }
  TensorPair inverse(const torch::Tensor& z) override {
    auto x = (z - beta_) * torch::exp(-log_gamma_) * torch::sqrt(var_ + eps_) + mean_;
    auto ld = -(log_gamma_ - 0.5 * torch::log(var_ + eps_)).sum().expand({z.size(0)});
    return {x, ld};
  }

 private:
  double momentum_, eps_;
  torch::Tensor log_gamma_, beta_, mean_, var_;
};

/// Element-wise tail compression z = asinh(a x) / a with a learned a > 0 per feature (a = e^{log_a},
/// starting at 0.1: within 1.5% of the identity up to 3 std). Power-law tails become exponential
/// ones, which couplings with linear tails and a Gaussian base reach (a Lipschitz flow from a
/// Gaussian cannot make heavy tails: Jaini et al. 2020). log|dz/dx| = -1/2 log(1 + a^2 x^2).
class AsinhTails : public Transform {
 public:
  explicit AsinhTails(int64_t dim) { log_a_ = register_parameter("log_a", torch::full({dim}, std::log(0.1))); }
  TensorPair forward(const torch::Tensor& x) override {
    const auto a = torch::exp(log_a_);
    return {torch::asinh(a * x) / a, -0.5 * torch::log1p((a * x).pow(2)).sum(1)};
  }
  TensorPair inverse(const torch::Tensor& z) override {
    const auto a = torch::exp(log_a_);
    const auto t = (a * z).abs();  // log cosh t = t + log1p(e^{-2t}) - log 2, stable for large t
    return {torch::sinh(a * z) / a, (t + torch::log1p(torch::exp(-2 * t)) - std::log(2.0)).sum(1)};
  }

 private:
  torch::Tensor log_a_;
};

void register_builtin_transforms(TransformRegistry& r) {
  r.add("affine_coupling",
        [](int64_t d, const FlowOptions& o, int64_t l) { return std::make_shared<AffineCoupling>(d, l, o); });
  r.add("spline_coupling",
        [](int64_t d, const FlowOptions& o, int64_t l) { return std::make_shared<SplineCoupling>(d, l, o); });
  r.add("reverse", [](int64_t d, const FlowOptions&, int64_t) { return std::make_shared<Permutation>(reversed(d)); });
  r.add("random_permutation", [](int64_t d, const FlowOptions& o, int64_t l) {
    return std::make_shared<Permutation>(shuffled(d, permutation_seed(o, l)));
  });
  r.add("lu_linear", [](int64_t d, const FlowOptions& o, int64_t l) {
    return std::make_shared<LULinear>(d, o.seed * 7919 + uint64_t(l));
  });
  r.add("actnorm", [](int64_t d, const FlowOptions&, int64_t) { return std::make_shared<ActNorm>(d); });
  r.add("asinh_tails", [](int64_t d, const FlowOptions&, int64_t) { return std::make_shared<AsinhTails>(d); });
  r.add("batch_norm", [](int64_t d, const FlowOptions&, int64_t) { return std::make_shared<BatchNormFlow>(d); });
}

}  // namespace

void Flow::set_dropout(double p) {
  require(p >= 0 && p < 1, "flow dropout " + std::to_string(p) + ": expected [0, 1)");
  for (const auto& m : modules())
    if (auto* c = dynamic_cast<Conditioner*>(m.get())) c->set_dropout(p);
}

TransformRegistry& TransformRegistry::instance() {
  static TransformRegistry* registry = [] {
    auto* r = new TransformRegistry();
    register_builtin_transforms(*r);
    return r;
  }();
  return *registry;
}

std::shared_ptr<Flow> build_flow(int64_t dim, const FlowOptions& o) {
  require(dim >= 1, "flow dimension must be positive, got " + std::to_string(dim));
  require(o.type == "nsf" || o.type == "realnvp", "flow.type '" + o.type + "': expected nsf or realnvp");
  require(o.permutation == "reverse" || o.permutation == "random" || o.permutation == "lu",
          "flow.permutation '" + o.permutation + "': expected reverse, random or lu");
  require(o.layers >= 1 && o.hidden >= 1 && o.hidden_layers >= 1 && o.bins >= 2 && o.tail_bound > 0,
          "flow: layers, hidden, hidden_layers must be >= 1, bins >= 2 and tail_bound > 0");
  require(o.tails == "linear" || o.tails == "asinh", "flow.tails '" + o.tails + "': expected linear or asinh");
  require(o.dropout >= 0 && o.dropout < 1, "flow.dropout " + std::to_string(o.dropout) + ": expected [0, 1)");
  auto& r = TransformRegistry::instance();
  auto composite = std::make_shared<CompositeTransform>();
  const std::string coupling = o.type == "nsf" ? "spline_coupling" : "affine_coupling";
  const std::string perm = o.permutation == "lu"       ? "lu_linear"
                           : o.permutation == "random" ? "random_permutation"
                                                       : "reverse";
  // Couplings transform one contiguous half (which one: the layer's parity, see Coupling).
  // Permutations between them move features, so a fixed alternation can cancel against them
  // (a reversal swaps the halves: alternating as well would transform the same features in
  // every layer and never the others). Each coupling therefore transforms the half whose
  // original features have been transformed least so far, tracked through the permutations
  // (an LU layer mixes everything and counts as the identity). With LU layers, or none, this
  // is the usual alternation.
  std::vector<int64_t> origin(static_cast<size_t>(dim)), count(static_cast<size_t>(dim), 0);
  for (int64_t i = 0; i < dim; ++i) origin[size_t(i)] = i;
  const int64_t first = dim / 2;
  if (o.tails == "asinh") composite->append(r.create("asinh_tails", dim, o, 0));  // on the data side
  for (int64_t l = 0; l < o.layers; ++l) {
    if (o.actnorm) composite->append(r.create("actnorm", dim, o, l));
    if (o.batch_norm) composite->append(r.create("batch_norm", dim, o, l));
    // Per half (parity 0 transforms [first, dim), parity 1 [0, first)): features never
    // transformed yet (more is better), then total times transformed (fewer is better).
    std::pair<int64_t, int64_t> score[2] = {{0, 0}, {0, 0}};
    for (int64_t i = 0; i < dim; ++i) {
      const int64_t c = count[size_t(origin[size_t(i)])];
      auto& sc = score[i < first ? 1 : 0];
      sc.first -= c == 0;
      sc.second += c;
    }
    const int64_t parity = dim == 1 ? 0 : score[0] != score[1] ? (score[0] < score[1] ? 0 : 1) : l % 2;
    for (int64_t i = 0; i < dim; ++i)
      if (dim == 1 || (parity == 0) == (i >= first)) ++count[size_t(origin[size_t(i)])];
    composite->append(r.create(coupling, dim, o, parity));
    if (l + 1 < o.layers && dim > 1) {
      composite->append(r.create(perm, dim, o, l));
      if (perm != "lu_linear") {
        const auto p = perm == "reverse" ? reversed(dim) : shuffled(dim, permutation_seed(o, l));
        auto moved = origin;
        for (int64_t i = 0; i < dim; ++i) moved[size_t(i)] = origin[size_t(p[size_t(i)])];
        origin = moved;
      }
    }
  }
  return std::make_shared<Flow>(dim, composite);
}

}  // namespace pae::flows
