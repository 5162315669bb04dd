#include "pae/flows/spline.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "pae/flows/fused_coupling.h"

namespace pae::flows {

namespace F = torch::nn::functional;

double identity_derivative_parameter(double min_derivative) { return std::log(std::expm1(1.0 - min_derivative)); }

namespace {

/// Knot positions on [left, right] from unnormalised bin sizes: [..., K] -> [..., K+1].
/// The ends are set exactly (cumsum rounding would move them).
at::Tensor knots(const at::Tensor& unnormalised, double min_size, double left, double right) {
  const int64_t k = unnormalised.size(-1);
  auto sizes = torch::softmax(unnormalised, -1).mul(1 - min_size * double(k)).add(min_size);
  auto inner = torch::cumsum(sizes.narrow(-1, 0, k - 1), -1).mul(right - left).add(left);
  auto shape = inner.sizes().vec();
  shape.back() = 1;
  return torch::cat({torch::full(shape, left, inner.options()), inner, torch::full(shape, right, inner.options())}, -1);
}

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

  // One gather for the six per-bin quantities.
  const auto table = torch::stack(
      {cumw.narrow(-1, 0, k), widths, cumh.narrow(-1, 0, k), heights, derivs.narrow(-1, 0, k), derivs.narrow(-1, 1, k)},
      -2);  // [..., 6, K]
  auto idx6 = idx.unsqueeze(-2).expand(table.sizes().vec()).narrow(-1, 0, 1);
  const auto picked = table.gather(-1, idx6).squeeze(-1).unbind(-1);  // 6 x [...]
  const auto &xk = picked[0], &wk = picked[1], &yk = picked[2], &hk = picked[3], &dk = picked[4], &dk1 = picked[5];
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

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

/// The kernels compute one precision above the tensors': extra bits where the inverse of a
/// very flat bin amplifies rounding (the inverse's error is ulps of y divided by the slope).
template <typename T>
using Wider = std::conditional_t<std::is_same_v<T, float>, double, long double>;

/// What the forward pass keeps per element for the backward pass: the 2K softmax probabilities,
/// the bin's two derivatives and their parameters' sigmoids.
inline int64_t saved_stride(int64_t k) { return 2 * k + 4; }

/// One row's spline, evaluated in a wider type A than the tensors' (double for float, long double for double): knots
/// from the packed unconstrained parameters [w(K) | h(K) | d(K-1)], the bin, and (forward) value, log-slope and their
/// partial derivatives. Shared by the fused forward, inverse and backward passes.
template <typename A>
struct RowSpline {
  int64_t k;
  SplineOptions o;
  std::vector<A> pw, ph, cw, ch;  // softmax probabilities, knots [K+1]
  const A* u_ = nullptr;
  std::vector<A> row_;
  A edge_;  // the boundary derivative (1 up to rounding, as in the tensor version)

  RowSpline(int64_t bins, const SplineOptions& opt)
      : k(bins),
        o(opt),
        pw(size_t(bins)),
        ph(size_t(bins)),
        cw(size_t(bins + 1)),
        ch(size_t(bins + 1)),
        edge_(A(opt.min_derivative) + softplus(A(identity_derivative_parameter(opt.min_derivative)))) {}

  static void knots(const A* u, int64_t k, A min_size, A b, std::vector<A>& p, std::vector<A>& cum) {
    A m = u[0];
    for (int64_t i = 1; i < k; ++i) m = std::max(m, u[i]);
    A s = 0;
    for (int64_t i = 0; i < k; ++i) s += (p[size_t(i)] = std::exp(u[i] - m));
    for (int64_t i = 0; i < k; ++i) p[size_t(i)] /= s;
    cumulate(p, k, min_size, b, cum);
  }

  /// Knot positions from the softmax probabilities.
  static void cumulate(const std::vector<A>& p, int64_t k, A min_size, A b, std::vector<A>& cum) {
    const A scale = 1 - min_size * A(k);
    cum[0] = -b;
    A acc = 0;
    for (int64_t i = 0; i < k - 1; ++i) {
      acc += min_size + scale * p[size_t(i)];
      cum[size_t(i + 1)] = acc * 2 * b - b;
    }
    cum[size_t(k)] = b;  // exact ends: cumsum rounding would move them
  }

  static A softplus(A v) { return v > 20 ? v : std::log1p(std::exp(v)); }

  /// Converts row i of the packed parameters to A and builds its knots.
  template <typename T>
  void load_row(const T* params, int64_t i) {
    const int64_t np = 3 * k - 1;
    row_.resize(size_t(np));
    for (int64_t j = 0; j < np; ++j) row_[size_t(j)] = A(params[i * np + j]);
    load(row_.data());
  }

  void load(const A* u) {
    knots(u, k, o.min_bin_width, o.tail_bound, pw, cw);
    knots(u + k, k, o.min_bin_height, o.tail_bound, ph, ch);
    u_ = u;
  }

  /// load_row with the softmax probabilities the forward pass saved ([pw | ph], 2K): the same
  /// knots without the 2K exponentials.
  template <typename T>
  void load_row_saved(const T* params, int64_t i, const A* probs) {
    const int64_t np = 3 * k - 1;
    row_.resize(size_t(np));
    for (int64_t j = 0; j < np; ++j) row_[size_t(j)] = A(params[i * np + j]);
    std::copy(probs, probs + k, pw.begin());
    std::copy(probs + k, probs + 2 * k, ph.begin());
    cumulate(pw, k, o.min_bin_width, o.tail_bound, cw);
    cumulate(ph, k, o.min_bin_height, o.tail_bound, ch);
    u_ = row_.data();
  }

  void save_probs(A* out) const {
    std::copy(pw.begin(), pw.end(), out);
    std::copy(ph.begin(), ph.end(), out + k);
  }

  /// Derivative at knot j (only the bin's two are ever needed: computed on demand).
  A deriv(int64_t j) const { return j == 0 || j == k ? edge_ : A(o.min_derivative) + softplus(u_[2 * k + j - 1]); }

  /// deriv(j), and the sigmoid of its parameter (the softplus's slope, for the backward pass) from
  /// the same exponential; 0 at the ends, which have no parameter.
  A deriv_and_slope(int64_t j, A* slope) const {
    if (j == 0 || j == k) {
      *slope = 0;
      return edge_;
    }
    const A u = u_[2 * k + j - 1];
    if (u > 20) {
      *slope = A(1) / (A(1) + std::exp(-u));
      return A(o.min_derivative) + u;
    }
    const A e = std::exp(u);
    *slope = e / (A(1) + e);
    return A(o.min_derivative) + std::log1p(e);
  }

  /// Number of knots at or below v, minus one, kept in [0, K-1] (as the tensor version).
  int64_t bin(const std::vector<A>& loc, A v) const {
    int64_t c = 0;
    for (int64_t j = 0; j <= k; ++j) c += v >= loc[size_t(j)];
    return std::clamp<int64_t>(c - 1, 0, k - 1);
  }
};

/// Forward (data to noise) or inverse values of the packed spline: x:[N], p:[N,3K-1] contiguous.
/// With `probs` ([N, saved_stride(K)] of A), each inside row keeps its softmax probabilities, its
/// bin's two derivatives and their parameters' sigmoids for spline_grads.
template <typename T, typename A = Wider<T>>
void spline_values(const at::Tensor& x, const at::Tensor& p, int64_t k, bool inverse, const SplineOptions& o,
                   at::Tensor& out, at::Tensor& logdet, A* probs = nullptr) {
  const int64_t n = x.size(0);
  const T* xs = x.data_ptr<T>();
  const T* ps = p.data_ptr<T>();
  T* ys = out.data_ptr<T>();
  T* ls = logdet.data_ptr<T>();
  const A b = o.tail_bound;
  at::parallel_for(0, n, 512, [&](int64_t lo, int64_t hi) {
    RowSpline<A> r(k, o);
    for (int64_t i = lo; i < hi; ++i) {
      const A v = A(xs[i]);
      if (!(v >= -b && v <= b)) {  // tails (and NaN) pass through unchanged
        ys[i] = xs[i];
        ls[i] = T(0);
        continue;
      }
      r.load_row(ps, i);
      const int64_t kb = r.bin(inverse ? r.ch : r.cw, v);
      const A xk = r.cw[size_t(kb)], wk = r.cw[size_t(kb + 1)] - xk;
      const A yk = r.ch[size_t(kb)], hk = r.ch[size_t(kb + 1)] - yk;
      A dk, dk1;
      if (probs) {
        A* keep = probs + i * saved_stride(k);
        r.save_probs(keep);
        dk = r.deriv_and_slope(kb, keep + 2 * k + 2);
        dk1 = r.deriv_and_slope(kb + 1, keep + 2 * k + 3);
        keep[2 * k] = dk;
        keep[2 * k + 1] = dk1;
      } else {
        dk = r.deriv(kb), dk1 = r.deriv(kb + 1);
      }
      const A s = hk / wk, sum_d = dk + dk1 - 2 * s;
      A theta;
      if (!inverse) {
        theta = std::clamp((v - xk) / wk, A(0), A(1));
      } else {
        const A dy = v - yk;
        const A a = dy * sum_d + hk * (s - dk), bq = hk * dk - dy * sum_d, c = -s * dy;
        const A disc = std::max(bq * bq - 4 * a * c, A(0));  // rounding can push it below zero
        const A den = -bq - std::sqrt(disc);
        theta = den == 0 ? A(0) : std::clamp(2 * c / den, A(0), A(1));
      }
      const A t1t = theta * (1 - theta);
      const A den = s + sum_d * t1t;
      const A m = dk1 * theta * theta + 2 * s * t1t + dk * (1 - theta) * (1 - theta);
      const A ld = std::log(s * s * m) - 2 * std::log(den);
      if (!inverse) {
        ys[i] = T(yk + hk * (s * theta * theta + dk * t1t) / den);
        ls[i] = T(ld);
      } else {
        ys[i] = T(theta * wk + xk);
        ls[i] = T(-ld);
      }
    }
  });
}

/// Gradients of the forward spline's (y, log|dy/dx|) with respect to x and the packed parameters.
/// `probs`: what spline_values kept for these rows ([N, saved_stride(K)]), or null (computed again).
template <typename T, typename A = Wider<T>>
void spline_grads(const at::Tensor& x, const at::Tensor& p, const at::Tensor& gy, const at::Tensor& gl, int64_t k,
                  const SplineOptions& o, at::Tensor& gx, at::Tensor& gp, const A* probs = nullptr) {
  const int64_t n = x.size(0), np = 3 * k - 1;
  const T* xs = x.data_ptr<T>();
  const T* ps = p.data_ptr<T>();
  const T* gys = gy.data_ptr<T>();
  const T* gls = gl.data_ptr<T>();
  T* gxs = gx.data_ptr<T>();
  T* gps = gp.data_ptr<T>();
  const A b = o.tail_bound;
  at::parallel_for(0, n, 512, [&](int64_t lo, int64_t hi) {
    RowSpline<A> r(k, o);
    std::vector<A> gsz(static_cast<size_t>(k)), gcw(size_t(k + 1)), gch(size_t(k + 1));
    for (int64_t i = lo; i < hi; ++i) {
      T* gpi = gps + i * np;
      std::fill(gpi, gpi + np, T(0));
      const A v = A(xs[i]);
      if (!(v >= -b && v <= b)) {
        gxs[i] = gys[i];
        continue;
      }
      const A* kept = probs ? probs + i * saved_stride(k) : nullptr;
      if (kept)
        r.load_row_saved(ps, i, kept);
      else
        r.load_row(ps, i);
      const int64_t kb = r.bin(r.cw, v);
      const A xk = r.cw[size_t(kb)], wk = r.cw[size_t(kb + 1)] - xk;
      const A hk = r.ch[size_t(kb + 1)] - r.ch[size_t(kb)];
      const A dk = kept ? kept[2 * k] : r.deriv(kb), dk1 = kept ? kept[2 * k + 1] : r.deriv(kb + 1);
      const A s = hk / wk, sum_d = dk + dk1 - 2 * s;
      const A th = std::clamp((v - xk) / wk, A(0), A(1)), t = th * (1 - th), dt = 1 - 2 * th;
      const A num = hk * (s * th * th + dk * t), den = s + sum_d * t;
      const A m = dk1 * th * th + 2 * s * t + dk * (1 - th) * (1 - th);
      const A g_y = A(gys[i]), g_l = A(gls[i]);
      // y = yk + num/den and L = log(s^2 m) - 2 log(den), as functions of theta, s, h, dk, dk1.
      const A ry = g_y / den, rq = g_y * num / (den * den);  // d/d num, -d/d den of y
      const A rm = g_l / m, rd = 2 * g_l / den;              // d/d m, -d/d den of L
      const A dnum_th = hk * (2 * s * th + dk * dt), dden_th = sum_d * dt;
      const A dm_th = 2 * dk1 * th + 2 * s * dt - 2 * dk * (1 - th);
      const A g_th = ry * dnum_th - rq * dden_th + rm * dm_th - rd * dden_th;
      const A g_s = ry * hk * th * th - rq * (1 - 2 * t) + g_l * 2 / s + rm * 2 * t - rd * (1 - 2 * t);
      A g_h = ry * (s * th * th + dk * t);
      const A g_dk = ry * hk * t - rq * t + rm * (1 - th) * (1 - th) - rd * t;
      const A g_dk1 = -rq * t + rm * th * th - rd * t;
      // theta = (x - xk)/w, s = h/w, w = x_{k+1} - x_k, h = y_{k+1} - y_k, y = y_k + ...
      gxs[i] = T(g_th / wk);
      const A g_w = -g_th * th / wk - g_s * s / wk;
      g_h += g_s / wk;
      std::fill(gcw.begin(), gcw.end(), A(0));
      std::fill(gch.begin(), gch.end(), A(0));
      gcw[size_t(kb)] += -g_th / wk - g_w;
      gcw[size_t(kb + 1)] += g_w;
      gch[size_t(kb)] += g_y - g_h;
      gch[size_t(kb + 1)] += g_h;
      // Knots back to the unconstrained parameters: cum[j] = -B + 2B sum_{i<j} size_i for
      // 0 < j < K (the ends are fixed), size_i = min + (1 - min K) softmax(u)_i.
      auto back = [&](const std::vector<A>& gcum, const std::vector<A>& prob, A min_size, T* out) {
        const A scale = (1 - min_size * A(k)) * 2 * b;
        A tail = 0, dot = 0;
        for (int64_t ii = k - 1; ii >= 0; --ii) {
          gsz[size_t(ii)] = scale * tail;  // size_i feeds knots j = i+1 .. K-1
          if (ii >= 1) tail += gcum[size_t(ii)];
          dot += prob[size_t(ii)] * gsz[size_t(ii)];
        }
        for (int64_t ii = 0; ii < k; ++ii) out[ii] = T(prob[size_t(ii)] * (gsz[size_t(ii)] - dot));
      };
      back(gcw, r.pw, o.min_bin_width, gpi);
      back(gch, r.ph, o.min_bin_height, gpi + k);
      // Interior derivatives d_j = min + softplus(u_{2K + j - 1}).
      auto sig = [](A z) { return A(1) / (A(1) + std::exp(-z)); };
      if (kb >= 1) gpi[2 * k + kb - 1] = T(g_dk * (kept ? kept[2 * k + 2] : sig(A(ps[i * np + 2 * k + kb - 1]))));
      if (kb + 1 <= k - 1) gpi[2 * k + kb] = T(g_dk1 * (kept ? kept[2 * k + 3] : sig(A(ps[i * np + 2 * k + kb]))));
    }
  });
}

struct FusedSpline : public torch::autograd::Function<FusedSpline> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& p, int64_t k, double b,
                             double min_w, double min_h, double min_d) {
    const SplineOptions o{b, min_w, min_h, min_d};
    auto y = torch::empty_like(x), ld = torch::empty_like(x);
    // float rows keep their softmax probabilities, bin derivatives and sigmoids (double,
    // saved_stride(K) per element) for the backward pass, which then calls no exp or log1p;
    // double rows (long double inside) compute them again.
    at::Tensor probs;
    if (x.scalar_type() == at::kFloat) {
      probs = torch::empty({x.size(0), saved_stride(k)}, x.options().dtype(at::kDouble));
      spline_values<float>(x, p, k, false, o, y, ld, probs.data_ptr<double>());
    } else {
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rq_spline",
                                 [&] { spline_values<scalar_t>(x, p, k, false, o, y, ld); });
    }
    ctx->save_for_backward({x, p});
    ctx->saved_data["has_probs"] = probs.defined();
    if (probs.defined()) ctx->saved_data["probs"] = probs;
    ctx->saved_data["k"] = k;
    ctx->saved_data["o"] = std::vector<double>{b, min_w, min_h, min_d};
    return {y, ld};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& p = saved[1];
    const int64_t k = ctx->saved_data["k"].toInt();
    const auto ov = ctx->saved_data["o"].toDoubleVector();
    const SplineOptions o{ov[0], ov[1], ov[2], ov[3]};
    auto gy = grads[0].defined() ? grads[0].contiguous() : torch::zeros_like(x);
    auto gl = grads[1].defined() ? grads[1].contiguous() : torch::zeros_like(x);
    if (torch::GradMode::is_enabled()) {
      // create_graph: the gradient will be differentiated again, and the kernel's gradients
      // carry no graph. The tensor implementation's graph gives the same gradient, differentiable.
      std::vector<at::Tensor> wrt;
      for (int i = 0; i < 2; ++i)
        if (ctx->needs_input_grad(size_t(i))) wrt.push_back(saved[size_t(i)]);
      auto [y, ld] =
          rational_quadratic_spline(x, p.narrow(-1, 0, k), p.narrow(-1, k, k), p.narrow(-1, 2 * k, k - 1), false, o);
      auto g = torch::autograd::grad({y, ld}, wrt, {gy, gl}, /*retain_graph=*/true, /*create_graph=*/true);
      size_t next = 0;
      const auto gx = ctx->needs_input_grad(0) ? g[next++] : at::Tensor();
      const auto gp = ctx->needs_input_grad(1) ? g[next++] : at::Tensor();
      return {gx, gp, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    auto gx = torch::empty_like(x), gp = torch::empty_like(p);
    const auto probs = ctx->saved_data["has_probs"].toBool() ? ctx->saved_data["probs"].toTensor() : at::Tensor();
    if (probs.defined() && x.scalar_type() == at::kFloat)
      spline_grads<float>(x, p, gy, gl, k, o, gx, gp, probs.data_ptr<double>());
    else
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rq_spline_backward",
                                 [&] { spline_grads<scalar_t>(x, p, gy, gl, k, o, gx, gp); });
    return {gx, gp, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

namespace fused {

int64_t spline_kept_stride(int64_t bins) { return saved_stride(bins); }

void spline_forward_rows(const at::Tensor& x, const at::Tensor& p, int64_t bins, const SplineOptions& o, at::Tensor& y,
                         at::Tensor& ld, double* kept) {
  if (kept && x.scalar_type() == at::kFloat)
    spline_values<float>(x, p, bins, false, o, y, ld, kept);
  else
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rq_spline_rows",
                               [&] { spline_values<scalar_t>(x, p, bins, false, o, y, ld); });
}

void spline_backward_rows(const at::Tensor& x, const at::Tensor& p, const at::Tensor& gy, const at::Tensor& gl,
                          int64_t bins, const SplineOptions& o, at::Tensor& gx, at::Tensor& gp, const double* kept) {
  if (kept && x.scalar_type() == at::kFloat)
    spline_grads<float>(x, p, gy, gl, bins, o, gx, gp, kept);
  else
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rq_spline_rows_backward",
                               [&] { spline_grads<scalar_t>(x, p, gy, gl, bins, o, gx, gp); });
}

}  // namespace fused

std::pair<at::Tensor, at::Tensor> rational_quadratic_spline_packed(const at::Tensor& inputs, const at::Tensor& params,
                                                                   int64_t bins, bool inverse, const SplineOptions& o) {
  TORCH_CHECK(bins >= 2 && params.size(-1) == 3 * bins - 1, "rational_quadratic_spline_packed: expected params:[..., ",
              3 * bins - 1, "] for ", bins, " bins, got ", params.sizes());
  TORCH_CHECK(params.dim() == inputs.dim() + 1 && params.sizes().slice(0, inputs.dim()) == inputs.sizes(),
              "rational_quadratic_spline_packed: inputs ", inputs.sizes(), " and params ", params.sizes(), " disagree");
  TORCH_CHECK(o.min_bin_width * double(bins) < 1 && o.min_bin_height * double(bins) < 1,
              "rational_quadratic_spline: minimal bin width/height too large for ", bins, " bins");
  const bool grad = torch::GradMode::is_enabled() && (inputs.requires_grad() || params.requires_grad());
  const bool fused = inputs.device().is_cpu() && params.scalar_type() == inputs.scalar_type() &&
                     (inputs.scalar_type() == torch::kFloat || inputs.scalar_type() == torch::kDouble) &&
                     !(inverse && grad);
  if (!fused)
    return rational_quadratic_spline(inputs, params.narrow(-1, 0, bins), params.narrow(-1, bins, bins),
                                     params.narrow(-1, 2 * bins, bins - 1), inverse, o);
  const auto x = inputs.reshape({-1}).contiguous();
  const auto p = params.reshape({-1, 3 * bins - 1}).contiguous();
  at::Tensor y, ld;
  if (inverse) {
    y = torch::empty_like(x), ld = torch::empty_like(x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rq_spline_inverse",
                               [&] { spline_values<scalar_t>(x, p, bins, true, o, y, ld); });
  } else {
    auto outs = FusedSpline::apply(x, p, bins, o.tail_bound, o.min_bin_width, o.min_bin_height, o.min_derivative);
    y = outs[0], ld = outs[1];
  }
  return {y.view(inputs.sizes()), ld.view(inputs.sizes())};
}

}  // namespace pae::flows
