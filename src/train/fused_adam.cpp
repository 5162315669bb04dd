#include "pae/train/fused_adam.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/optim/serialize.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>

#include "pae/train/optimizer_state.h"

namespace pae::train {

namespace {

/// Scalars of one parameter's update, as Adam's tensor operations apply them.
struct Coefficients {
  double beta1, beta2, sqrt_bc2, eps, step_size;
  double grad_decay;   ///< Adam: weight decay added to the gradient
  double param_scale;  ///< AdamW: 1 - lr * weight decay, applied to the parameter first
};

/// One element at a time, in the order of LibTorch's Adam: m = b1 m + (1 - b1) g,
/// v = b2 v + (1 - b2) g^2, p -= step_size m / (sqrt(v) / sqrt(bc2) + eps). The weight-decay
/// variants are template arguments, so the loop has no branch and vectorises (the file is
/// compiled with -fno-math-errno: sqrt is an instruction, not a call that may set errno).
template <typename T, bool kGradDecay, bool kParamScale>
inline void adam_loop(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t n,
                      const Coefficients& c) {
  const T b1 = T(c.beta1), b2 = T(c.beta2), a1 = T(1 - c.beta1), a2 = T(1 - c.beta2), s2 = T(c.sqrt_bc2),
          eps = T(c.eps), step = T(-c.step_size), wd = T(c.grad_decay), scale = T(c.param_scale);
  for (int64_t i = 0; i < n; ++i) {
    const T gi = kGradDecay ? g[i] + wd * p[i] : g[i];
    const T mi = m[i] * b1 + a1 * gi;
    const T vi = v[i] * b2 + a2 * gi * gi;
    const T pi = kParamScale ? p[i] * scale : p[i];
    p[i] = pi + step * (mi / (std::sqrt(vi) / s2 + eps));
    m[i] = mi;
    v[i] = vi;
  }
}

template <typename T>
inline void adam_elements(T* p, const T* g, T* m, T* v, int64_t n, const Coefficients& c) {
  if (c.grad_decay != 0)
    adam_loop<T, true, false>(p, g, m, v, n, c);
  else if (c.param_scale != 1)
    adam_loop<T, false, true>(p, g, m, v, n, c);
  else
    adam_loop<T, false, false>(p, g, m, v, n, c);
}

// Compiled for AVX-512, AVX2 and the baseline; the loader picks the widest the CPU has.
__attribute__((target_clones("avx512f", "avx2", "default"))) void adam_f32(float* p, const float* g, float* m, float* v,
                                                                           int64_t n, const Coefficients& c) {
  adam_elements(p, g, m, v, n, c);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) void adam_f64(double* p, const double* g, double* m,
                                                                           double* v, int64_t n,
                                                                           const Coefficients& c) {
  adam_elements(p, g, m, v, n, c);
}

template <typename T>
inline int nonfinite_elements(const T* __restrict x, int64_t n) {
  const T max = std::numeric_limits<T>::max();
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= !(std::fabs(x[i]) <= max);  // NaN compares false
  return bad;
}
__attribute__((target_clones("avx512f", "avx2", "default"))) int nonfinite_f32(const float* x, int64_t n) {
  return nonfinite_elements(x, n);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) int nonfinite_f64(const double* x, int64_t n) {
  return nonfinite_elements(x, n);
}

bool fusable(const torch::optim::OptimizerParamGroup& group) {
  for (const auto& p : group.params()) {
    if (!p.grad().defined()) continue;
    const auto& g = p.grad();
    if (!p.device().is_cpu() || (p.scalar_type() != at::kFloat && p.scalar_type() != at::kDouble) ||
        g.scalar_type() != p.scalar_type() || !p.is_contiguous() || !g.is_contiguous() || g.is_sparse())
      return false;
  }
  return true;
}

/// Steps every parameter of the optimizer's groups; `decoupled` selects AdamW's weight decay.
template <typename Options, typename StateMap>
void fused_step(torch::optim::Optimizer& opt, StateMap& state, bool decoupled) {
  at::NoGradGuard no_grad;
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const Options&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto key = state_key<StateMap>(p);
      auto it = state.find(key);
      if (it == state.end()) {  // as torch::optim::Adam creates it
        auto s = std::make_unique<torch::optim::AdamParamState>();
        s->step(0);
        s->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        s->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        it = state.emplace(key, std::move(s)).first;
      }
      auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
      s.step(s.step() + 1);
      const auto [beta1, beta2] = o.betas();
      Coefficients c;
      c.beta1 = beta1;
      c.beta2 = beta2;
      c.sqrt_bc2 = std::sqrt(1 - std::pow(beta2, double(s.step())));
      c.eps = o.eps();
      c.step_size = o.lr() / (1 - std::pow(beta1, double(s.step())));
      c.grad_decay = decoupled ? 0 : o.weight_decay();
      c.param_scale = decoupled ? 1 - o.lr() * o.weight_decay() : 1;
      auto m = s.exp_avg(), v = s.exp_avg_sq();
      const auto g = p.grad();
      const int64_t n = p.numel();
      at::parallel_for(0, n, 16384, [&](int64_t lo, int64_t hi) {
        if (p.scalar_type() == at::kFloat)
          adam_f32(p.data_ptr<float>() + lo, g.data_ptr<float>() + lo, m.data_ptr<float>() + lo,
                   v.data_ptr<float>() + lo, hi - lo, c);
        else
          adam_f64(p.data_ptr<double>() + lo, g.data_ptr<double>() + lo, m.data_ptr<double>() + lo,
                   v.data_ptr<double>() + lo, hi - lo, c);
      });
    }
  }
}

}  // namespace

bool gradients_finite(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads, others;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    const auto& g = p.grad();
    const bool plain = g.device().is_cpu() && g.is_contiguous() && !g.is_sparse() &&
                       (g.scalar_type() == at::kFloat || g.scalar_type() == at::kDouble);
    (plain ? grads : others).push_back(g);
  }
  for (const auto& g : grads) {
    std::atomic<bool> bad{false};
    at::parallel_for(0, g.numel(), 65536, [&](int64_t lo, int64_t hi) {
      const int b = g.scalar_type() == at::kFloat ? nonfinite_f32(g.data_ptr<float>() + lo, hi - lo)
                                                  : nonfinite_f64(g.data_ptr<double>() + lo, hi - lo);
      if (b) bad = true;
    });
    if (bad) return false;
  }
  if (others.empty()) return true;
  // The sum of every entry is non-finite when any entry is (one device sync).
  std::vector<at::Tensor> sums;
  for (const auto& g : others) sums.push_back(g.sum().to(at::kDouble));
  return at::isfinite(at::stack(sums).sum()).item<bool>();
}

namespace {

/// The step of FusedAdam (Base = Adam) and FusedAdamW (Base = AdamW): fused when every group can
/// be, LibTorch's otherwise.
template <typename Base, typename Options, typename Self>
at::Tensor step_of(Self& self, typename Base::LossClosure closure, bool decoupled) {
  bool fused = true;
  for (const auto& group : self.param_groups())
    fused = fused && fusable(group) && !static_cast<const Options&>(group.options()).amsgrad();
  if (!fused) return self.Base::step(closure);
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  fused_step<Options>(self, self.state(), decoupled);
  return loss;
}

}  // namespace

at::Tensor FusedAdam::step(LossClosure closure) {
  return step_of<torch::optim::Adam, torch::optim::AdamOptions>(*this, closure, /*decoupled=*/false);
}

at::Tensor FusedAdamW::step(LossClosure closure) {
  return step_of<torch::optim::AdamW, torch::optim::AdamWOptions>(*this, closure, /*decoupled=*/true);
}

}  // namespace pae::train
