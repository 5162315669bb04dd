#include "pae/flows/fused_coupling.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "pae/nn/blas.h"

namespace pae::flows::fused {

namespace {

using pae::nn::blas::relu_in_place;
using pae::nn::blas::relu_mask_in_place;
using pae::nn::blas::row_grain;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

template <typename T>
void scale_in_place(T* __restrict v, const T* __restrict by, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] *= by[i];
}

/// What the forward pass keeps for the backward pass besides x and the layers: the hidden
/// layers' outputs (after ReLU) and, per head, the affine log-slopes l and e^l, or the spline's
/// inputs, parameters and the float spline's kept values.
struct Kept {
  std::vector<at::Tensor> acts;   // after ReLU and dropout: the next layer's input
  std::vector<at::Tensor> masks;  // dropout's scaled keep masks, one per hidden layer (or none)
  at::Tensor l, e;                // affine: [B, nt]
  at::Tensor xt, params, kept;    // spline: [B nt], [B, nt P], [B nt, spline_kept_stride] double (float only)
};

/// The passes of the fused coupling on raw pointers. Layer k maps width in(k) to out(k); its
/// input is x's identity columns (k = 0, leading dimension D) or the previous layer's output.
template <typename T>
struct Passes {
  const std::vector<at::Tensor>& layers;
  CouplingSpec s;
  int64_t batch, dim, nt, n_layers;
  Passes(const std::vector<at::Tensor>& l, const CouplingSpec& spec, int64_t b, int64_t d)
      : layers(l), s(spec), batch(b), dim(d), nt(d - spec.n_identity), n_layers(int64_t(l.size()) / 2) {}
  const T* weight(int64_t k) const { return layers[size_t(2 * k)].data_ptr<T>(); }
  const T* bias(int64_t k) const { return layers[size_t(2 * k + 1)].data_ptr<T>(); }
  int64_t out(int64_t k) const { return layers[size_t(2 * k)].size(0); }
  int64_t in(int64_t k) const { return layers[size_t(2 * k)].size(1); }

  /// y [B, D] and logdet [B] from x, filling `keep`; `params`: the last layer's outputs [B, nt P].
  void forward(const T* x, at::Tensor& params, Kept& keep, T* y, T* logdet) const {
    T* ps = params.data_ptr<T>();
    at::parallel_for(0, batch, row_grain(batch), [&](int64_t lo, int64_t hi) {
      const int64_t m = hi - lo;
      const T* src = x + lo * dim + s.identity_begin;
      int64_t ld = dim;
      for (int64_t k = 0; k < n_layers; ++k) {
        const int64_t o = out(k);
        T* dst = (k + 1 < n_layers ? keep.acts[size_t(k)].data_ptr<T>() : ps) + lo * o;
        const T* b = bias(k);
        for (int64_t r = 0; r < m; ++r) std::copy(b, b + o, dst + r * o);  // the bias, then the product added to it
        pae::nn::blas::gemm(false, true, m, o, in(k), src, ld, weight(k), in(k), dst, o, /*accumulate=*/true);
        if (k + 1 < n_layers) {
          relu_in_place(dst, m * o);
          if (!keep.masks.empty()) scale_in_place(dst, keep.masks[size_t(k)].data_ptr<T>() + lo * o, m * o);
        }
        src = dst;
        ld = o;
      }
      for (int64_t r = lo; r < hi; ++r)
        std::copy(x + r * dim + s.identity_begin, x + r * dim + s.identity_begin + s.n_identity,
                  y + r * dim + s.identity_begin);
      if (s.bins == 0)
        affine_forward(x, ps, keep, y, logdet, lo, hi);
      else
        spline_forward(x, params, keep, y, logdet, lo, hi);
    });
  }

  void affine_forward(const T* x, const T* ps, Kept& keep, T* y, T* logdet, int64_t lo, int64_t hi) const {
    T *l = keep.l.data_ptr<T>(), *e = keep.e.data_ptr<T>();
    for (int64_t r = lo; r < hi; ++r) {
      const T* p = ps + r * 2 * nt;
      const T* xt = x + r * dim + s.transformed_begin;
      T* yt = y + r * dim + s.transformed_begin;
      T *lr = l + r * nt, *er = e + r * nt;
      T sum = 0;
      for (int64_t j = 0; j < nt; ++j) {
        const T lj = T(3) * std::tanh(p[2 * j + 1] / T(3));
        lr[j] = lj;
        er[j] = std::exp(lj);
        yt[j] = xt[j] * er[j] + p[2 * j];
        sum += lj;
      }
      logdet[r] = sum;
    }
  }

  void spline_forward(const T* x, const at::Tensor& params, Kept& keep, T* y, T* logdet, int64_t lo, int64_t hi) const {
    T* xt = keep.xt.data_ptr<T>();
    for (int64_t r = lo; r < hi; ++r)
      std::copy(x + r * dim + s.transformed_begin, x + r * dim + s.transformed_begin + nt, xt + r * nt);
    auto rows = keep.xt.slice(0, lo * nt, hi * nt);
    auto yt = torch::empty_like(rows), lds = torch::empty_like(rows);
    double* kept = keep.kept.defined() ? keep.kept.data_ptr<double>() + lo * nt * spline_kept_stride(s.bins) : nullptr;
    spline_forward_rows(rows, params.view({batch * nt, -1}).slice(0, lo * nt, hi * nt), s.bins, s.spline, yt, lds,
                        kept);
    const T *ys = yt.data_ptr<T>(), *ls = lds.data_ptr<T>();
    for (int64_t r = lo; r < hi; ++r) {
      const T* yr = ys + (r - lo) * nt;
      std::copy(yr, yr + nt, y + r * dim + s.transformed_begin);
      T sum = 0;
      for (int64_t j = 0; j < nt; ++j) sum += ls[(r - lo) * nt + j];
      logdet[r] = sum;
    }
  }

  /// grads[k]: the gradient at layer k's pre-activation ([B, out(k)]); gx (null: not needed).
  void backward_rows(const T* x, const Kept& keep, const T* gy, const T* glogdet, std::vector<at::Tensor>& grads,
                     T* gx) const {
    at::parallel_for(0, batch, row_grain(batch), [&](int64_t lo, int64_t hi) {
      const int64_t m = hi - lo;
      if (s.bins == 0)
        affine_backward(x, keep, gy, glogdet, grads.back().data_ptr<T>(), gx, lo, hi);
      else
        spline_backward(keep, gy, glogdet, grads.back(), gx, lo, hi);
      if (gx)
        for (int64_t r = lo; r < hi; ++r)
          std::copy(gy + r * dim + s.identity_begin, gy + r * dim + s.identity_begin + s.n_identity,
                    gx + r * dim + s.identity_begin);
      for (int64_t k = n_layers - 1; k >= 1; --k) {  // to the output of layer k - 1, through its ReLU
        const int64_t o = out(k), i = in(k);
        T* below = grads[size_t(k - 1)].data_ptr<T>() + lo * i;
        pae::nn::blas::gemm(false, false, m, i, o, grads[size_t(k)].data_ptr<T>() + lo * o, o, weight(k), i, below, i);
        // Through dropout (zero where dropped, so the kept output's sign is the ReLU's) and the ReLU.
        if (!keep.masks.empty()) scale_in_place(below, keep.masks[size_t(k - 1)].data_ptr<T>() + lo * i, m * i);
        relu_mask_in_place(below, keep.acts[size_t(k - 1)].data_ptr<T>() + lo * i, m * i);
      }
      if (gx)  // the identity columns: gy's part (copied above) plus the conditioner's
        pae::nn::blas::gemm(false, false, m, s.n_identity, out(0), grads[0].data_ptr<T>() + lo * out(0), out(0),
                            weight(0), s.n_identity, gx + lo * dim + s.identity_begin, dim, /*accumulate=*/true);
    });
  }

  void affine_backward(const T* x, const Kept& keep, const T* gy, const T* glogdet, T* gp, T* gx, int64_t lo,
                       int64_t hi) const {
    const T *l = keep.l.data_ptr<T>(), *e = keep.e.data_ptr<T>();
    for (int64_t r = lo; r < hi; ++r) {
      const T* xt = x + r * dim + s.transformed_begin;
      const T* gyt = gy + r * dim + s.transformed_begin;
      const T *lr = l + r * nt, *er = e + r * nt;
      T* g = gp + r * 2 * nt;
      const T gl = glogdet[r];
      for (int64_t j = 0; j < nt; ++j) {
        const T q = lr[j] / T(3);
        g[2 * j] = gyt[j];
        g[2 * j + 1] = (gyt[j] * xt[j] * er[j] + gl) * (T(1) - q * q);
      }
      if (gx) {
        T* gxt = gx + r * dim + s.transformed_begin;
        for (int64_t j = 0; j < nt; ++j) gxt[j] = gyt[j] * er[j];
      }
    }
  }

  void spline_backward(const Kept& keep, const T* gy, const T* glogdet, at::Tensor& gparams, T* gx, int64_t lo,
                       int64_t hi) const {
    auto gyt = torch::empty({(hi - lo) * nt}, keep.xt.options()), gl = torch::empty_like(gyt);
    T *gys = gyt.data_ptr<T>(), *gls = gl.data_ptr<T>();
    for (int64_t r = lo; r < hi; ++r) {
      std::copy(gy + r * dim + s.transformed_begin, gy + r * dim + s.transformed_begin + nt, gys + (r - lo) * nt);
      std::fill(gls + (r - lo) * nt, gls + (r - lo + 1) * nt, glogdet[r]);
    }
    auto gxt = torch::empty_like(gyt);
    auto gp = gparams.view({batch * nt, -1}).slice(0, lo * nt, hi * nt);
    const double* kept =
        keep.kept.defined() ? keep.kept.data_ptr<double>() + lo * nt * spline_kept_stride(s.bins) : nullptr;
    spline_backward_rows(keep.xt.slice(0, lo * nt, hi * nt),
                         keep.params.view({batch * nt, -1}).slice(0, lo * nt, hi * nt), gyt, gl, s.bins, s.spline, gxt,
                         gp, kept);
    if (gx) {
      const T* gxs = gxt.data_ptr<T>();
      for (int64_t r = lo; r < hi; ++r)
        std::copy(gxs + (r - lo) * nt, gxs + (r - lo + 1) * nt, gx + r * dim + s.transformed_begin);
    }
  }

  /// Weight and bias gradients, each layer's output features split over the threads (every sum
  /// over the batch stays inside one product: no reduction is split).
  void backward_weights(const T* x, const Kept& keep, const std::vector<at::Tensor>& grads, std::vector<at::Tensor>& gw,
                        std::vector<at::Tensor>& gb) const {
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t k = 0; k < n_layers; ++k) {
        const int64_t o = out(k), i = in(k);
        const int64_t f0 = o * t0 / threads, f1 = o * t1 / threads;
        if (f1 <= f0) continue;
        const T* g = grads[size_t(k)].data_ptr<T>();
        const T* input = k == 0 ? x + s.identity_begin : keep.acts[size_t(k - 1)].data_ptr<T>();
        const int64_t ld = k == 0 ? dim : i;
        if (gw[size_t(k)].defined())
          pae::nn::blas::gemm(true, false, f1 - f0, i, batch, g + f0, o, input, ld,
                              gw[size_t(k)].data_ptr<T>() + f0 * i, i);
        if (gb[size_t(k)].defined())
          pae::nn::blas::add_rows(g + f0, batch, o, f1 - f0, gb[size_t(k)].data_ptr<T>() + f0);
      }
    });
  }
};

std::vector<double> pack(const CouplingSpec& s) {
  return {double(s.identity_begin), double(s.n_identity),    double(s.transformed_begin),
          double(s.bins),           s.spline.tail_bound,     s.spline.min_bin_width,
          s.spline.min_bin_height,  s.spline.min_derivative, s.dropout};
}
CouplingSpec unpack(const std::vector<double>& v) {
  return {int64_t(v[0]), int64_t(v[1]), int64_t(v[2]), int64_t(v[3]), SplineOptions{v[4], v[5], v[6], v[7]}, v[8]};
}

struct FusedCoupling : public torch::autograd::Function<FusedCoupling> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList layer_list,
                             const std::vector<double>& packed) {
    const std::vector<at::Tensor> layers(layer_list.begin(), layer_list.end());
    const CouplingSpec s = unpack(packed);
    const int64_t b = x.size(0), d = x.size(1), nt = d - s.n_identity, n = int64_t(layers.size()) / 2;
    Kept keep;
    for (int64_t k = 0; k + 1 < n; ++k) {
      keep.acts.push_back(torch::empty({b, layers[size_t(2 * k)].size(0)}, x.options()));
      if (s.dropout > 0)  // as torch::dropout draws: bernoulli(1 - p) / (1 - p), layer by layer
        keep.masks.push_back(torch::empty_like(keep.acts.back()).bernoulli_(1 - s.dropout).div_(1 - s.dropout));
    }
    auto params = torch::empty({b, nt * s.params_per_feature()}, x.options());
    if (s.bins == 0) {
      keep.l = torch::empty({b, nt}, x.options()), keep.e = torch::empty({b, nt}, x.options());
    } else {
      keep.xt = torch::empty({b * nt}, x.options());
      keep.params = params;
      if (x.scalar_type() == at::kFloat)
        keep.kept = torch::empty({b * nt, spline_kept_stride(s.bins)}, x.options().dtype(at::kDouble));
    }
    auto y = torch::empty_like(x), logdet = torch::empty({b}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fused_coupling", [&] {
      Passes<scalar_t>(layers, s, b, d)
          .forward(x.data_ptr<scalar_t>(), params, keep, y.data_ptr<scalar_t>(), logdet.data_ptr<scalar_t>());
    });
    std::vector<at::Tensor> saved = {x};
    saved.insert(saved.end(), layers.begin(), layers.end());
    saved.insert(saved.end(), keep.acts.begin(), keep.acts.end());
    saved.insert(saved.end(), keep.masks.begin(), keep.masks.end());
    ctx->save_for_backward(saved);
    // Intermediate buffers of this node (not inputs or outputs): kept as plain tensors.
    for (const auto& [name, t] : {std::pair<const char*, at::Tensor>{"l", keep.l},
                                  {"e", keep.e},
                                  {"xt", keep.xt},
                                  {"params", keep.params},
                                  {"kept", keep.kept}})
      if (t.defined()) ctx->saved_data[name] = t;
    ctx->saved_data["spec"] = packed;
    ctx->saved_data["n_layers"] = n;
    return {y, logdet};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list out_grads) {
    const auto saved = ctx->get_saved_variables();
    const CouplingSpec s = unpack(ctx->saved_data["spec"].toDoubleVector());
    const int64_t n = ctx->saved_data["n_layers"].toInt();
    const auto& x = saved[0];
    const std::vector<at::Tensor> layers(saved.begin() + 1, saved.begin() + 1 + 2 * n);
    Kept keep;
    keep.acts.assign(saved.begin() + 1 + 2 * n, saved.begin() + 1 + 2 * n + (n - 1));
    keep.masks.assign(saved.begin() + 1 + 2 * n + (n - 1), saved.end());
    auto get = [&](const char* name) {
      return ctx->saved_data.count(name) ? ctx->saved_data[name].toTensor() : at::Tensor();
    };
    keep.l = get("l"), keep.e = get("e"), keep.xt = get("xt"), keep.params = get("params"), keep.kept = get("kept");
    auto gy = out_grads[0].defined() ? out_grads[0].contiguous() : torch::zeros_like(x);
    auto gl = out_grads[1].defined() ? out_grads[1].contiguous() : torch::zeros({x.size(0)}, x.options());
    tensor_list result(size_t(1 + 2 * n + 1));
    if (torch::GradMode::is_enabled()) {
      // create_graph: the gradient will be differentiated again; the passes' gradients carry no
      // graph, the reference's do (the same values, from tensor operations).
      std::vector<at::Tensor> wrt;
      std::vector<size_t> slots;
      for (size_t i = 0; i < size_t(1 + 2 * n); ++i)
        if (ctx->needs_input_grad(i)) wrt.push_back(i == 0 ? x : layers[i - 1]), slots.push_back(i);
      auto [y, ld] = coupling_reference(x, layers, s, &keep.masks);
      auto g = torch::autograd::grad({y, ld}, wrt, {gy, gl}, /*retain_graph=*/true, /*create_graph=*/true,
                                     /*allow_unused=*/true);
      for (size_t j = 0; j < slots.size(); ++j) result[slots[j]] = g[j];
      return result;
    }
    const int64_t b = x.size(0);
    std::vector<at::Tensor> grads, gw, gb;
    for (int64_t k = 0; k < n; ++k) {
      grads.push_back(torch::empty({b, layers[size_t(2 * k)].size(0)}, x.options()));
      gw.push_back(ctx->needs_input_grad(size_t(1 + 2 * k)) ? torch::empty_like(layers[size_t(2 * k)]) : at::Tensor());
      gb.push_back(ctx->needs_input_grad(size_t(2 + 2 * k)) ? torch::empty_like(layers[size_t(2 * k + 1)])
                                                            : at::Tensor());
    }
    at::Tensor gx = ctx->needs_input_grad(0) ? torch::empty_like(x) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fused_coupling_backward", [&] {
      const Passes<scalar_t> passes(layers, s, b, x.size(1));
      passes.backward_rows(x.data_ptr<scalar_t>(), keep, gy.data_ptr<scalar_t>(), gl.data_ptr<scalar_t>(), grads,
                           gx.defined() ? gx.data_ptr<scalar_t>() : nullptr);
      passes.backward_weights(x.data_ptr<scalar_t>(), keep, grads, gw, gb);
    });
    result[0] = gx;
    for (int64_t k = 0; k < n; ++k)
      result[size_t(1 + 2 * k)] = gw[size_t(k)], result[size_t(2 + 2 * k)] = gb[size_t(k)];
    return result;
  }
};

}  // namespace

bool applies(const at::Tensor& x, const std::vector<at::Tensor>& layers, const CouplingSpec& s) {
  if (!x.device().is_cpu() || x.dim() != 2 || !x.is_contiguous() || s.n_identity < 1 || layers.size() < 2 ||
      layers.size() % 2 != 0)
    return false;
  const auto type = x.scalar_type();
  if (type == at::kFloat ? !pae::nn::blas::has_sgemm() : type == at::kDouble ? !pae::nn::blas::has_dgemm() : true)
    return false;
  for (const auto& t : layers)
    if (t.scalar_type() != type || !t.is_contiguous() || !t.device().is_cpu()) return false;
  return x.size(0) < (int64_t(1) << 31) / 4096;  // int-sized products
}

std::pair<at::Tensor, at::Tensor> coupling_mlp(const at::Tensor& x, const std::vector<at::Tensor>& layers,
                                               const CouplingSpec& s) {
  auto out = FusedCoupling::apply(x, at::TensorList(layers), pack(s));
  return {out[0], out[1]};
}

std::pair<at::Tensor, at::Tensor> coupling_reference(const at::Tensor& x, const std::vector<at::Tensor>& layers,
                                                     const CouplingSpec& s, const std::vector<at::Tensor>* masks) {
  const int64_t nt = x.size(1) - s.n_identity, n = int64_t(layers.size()) / 2;
  auto xi = x.narrow(1, s.identity_begin, s.n_identity);
  auto xt = x.narrow(1, s.transformed_begin, nt);
  auto h = xi;
  for (int64_t k = 0; k < n; ++k) {
    h = torch::linear(h, layers[size_t(2 * k)], layers[size_t(2 * k + 1)]);
    if (k + 1 < n) {
      h = torch::relu(h);
      if (masks && !masks->empty())
        h = h * (*masks)[size_t(k)];
      else if (s.dropout > 0)
        h = torch::dropout(h, s.dropout, /*train=*/true);
    }
  }
  auto p = h.view({x.size(0), nt, s.params_per_feature()});
  at::Tensor yt, ld;
  if (s.bins == 0) {
    ld = 3.0 * torch::tanh(p.select(2, 1) / 3.0);
    yt = xt * torch::exp(ld) + p.select(2, 0);
  } else {
    const int64_t k = s.bins;
    std::tie(yt, ld) =
        rational_quadratic_spline(xt, p.narrow(2, 0, k), p.narrow(2, k, k), p.narrow(2, 2 * k, k - 1), false, s.spline);
  }
  auto y = s.identity_begin < s.transformed_begin ? torch::cat({xi, yt}, 1) : torch::cat({yt, xi}, 1);
  return {y, ld.sum(1)};
}

}  // namespace pae::flows::fused
