#include "pae/flows/fused_coupling.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "pae/nn/blas.h"

namespace pae::flows::fused {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

using pae::nn::blas::relu_in_place;
using pae::nn::blas::relu_mask_in_place;
using pae::nn::blas::row_grain;

/// The passes of the fused coupling on raw pointers. Layer k maps width in[k] to out[k]; its
/// input is x's identity columns (k = 0, leading dimension D) or the previous layer's output.
template <typename T>
struct Passes {
  const std::vector<at::Tensor>& layers;
  CouplingColumns c;
  int64_t batch, dim, nt, n_layers;
  Passes(const std::vector<at::Tensor>& l, const CouplingColumns& cols, int64_t b, int64_t d)
      : layers(l), c(cols), batch(b), dim(d), nt(d - cols.n_identity), n_layers(int64_t(l.size()) / 2) {}
  const T* weight(int64_t k) const { return layers[size_t(2 * k)].data_ptr<T>(); }
  const T* bias(int64_t k) const { return layers[size_t(2 * k + 1)].data_ptr<T>(); }
  int64_t out(int64_t k) const { return layers[size_t(2 * k)].size(0); }
  int64_t in(int64_t k) const { return layers[size_t(2 * k)].size(1); }

  /// acts[k]: layer k's output for k < n - 1 (after ReLU); params: the last layer's [B, 2 nt];
  /// y, l (log-slopes), e = exp(l), logdet.
  void forward(const T* x, std::vector<at::Tensor>& acts, T* params, T* y, T* l, T* e, T* logdet) const {
    at::parallel_for(0, batch, row_grain(batch), [&](int64_t lo, int64_t hi) {
      const int64_t m = hi - lo;
      const T* src = x + lo * dim + c.identity_begin;
      int64_t ld = dim;
      for (int64_t k = 0; k < n_layers; ++k) {
        const int64_t o = out(k);
        T* dst = (k + 1 < n_layers ? acts[size_t(k)].data_ptr<T>() : params) + lo * o;
        const T* b = bias(k);
        for (int64_t r = 0; r < m; ++r) std::copy(b, b + o, dst + r * o);  // the bias, then the product added to it
        pae::nn::blas::gemm(false, true, m, o, in(k), src, ld, weight(k), in(k), dst, o, /*accumulate=*/true);
        if (k + 1 < n_layers) relu_in_place(dst, m * o);
        src = dst;
        ld = o;
      }
      for (int64_t r = lo; r < hi; ++r) {
        const T* p = params + r * 2 * nt;
        const T* xt = x + r * dim + c.transformed_begin;
        T* yt = y + r * dim + c.transformed_begin;
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
        std::copy(x + r * dim + c.identity_begin, x + r * dim + c.identity_begin + c.n_identity,
                  y + r * dim + c.identity_begin);
      }
    });
  }

  /// grads[k]: the gradient at layer k's pre-activation ([B, out(k)]); gx (null: not needed).
  void backward_rows(const T* x, const std::vector<at::Tensor>& acts, const T* l, const T* e, const T* gy,
                     const T* glogdet, std::vector<at::Tensor>& grads, T* gx) const {
    at::parallel_for(0, batch, row_grain(batch), [&](int64_t lo, int64_t hi) {
      const int64_t m = hi - lo;
      T* gp = grads.back().data_ptr<T>();
      for (int64_t r = lo; r < hi; ++r) {
        const T* xt = x + r * dim + c.transformed_begin;
        const T* gyt = gy + r * dim + c.transformed_begin;
        const T *lr = l + r * nt, *er = e + r * nt;
        T* g = gp + r * 2 * nt;
        const T gl = glogdet[r];
        for (int64_t j = 0; j < nt; ++j) {
          const T s = lr[j] / T(3);
          g[2 * j] = gyt[j];
          g[2 * j + 1] = (gyt[j] * xt[j] * er[j] + gl) * (T(1) - s * s);
        }
        if (gx) {
          T* gxt = gx + r * dim + c.transformed_begin;
          for (int64_t j = 0; j < nt; ++j) gxt[j] = gyt[j] * er[j];
          std::copy(gy + r * dim + c.identity_begin, gy + r * dim + c.identity_begin + c.n_identity,
                    gx + r * dim + c.identity_begin);
        }
      }
      for (int64_t k = n_layers - 1; k >= 1; --k) {  // to the output of layer k - 1, through its ReLU
        const int64_t o = out(k), i = in(k);
        T* below = grads[size_t(k - 1)].data_ptr<T>() + lo * i;
        pae::nn::blas::gemm(false, false, m, i, o, grads[size_t(k)].data_ptr<T>() + lo * o, o, weight(k), i, below, i);
        relu_mask_in_place(below, acts[size_t(k - 1)].data_ptr<T>() + lo * i, m * i);
      }
      if (gx)  // the identity columns: gy's part (copied above) plus the conditioner's
        pae::nn::blas::gemm(false, false, m, c.n_identity, out(0), grads[0].data_ptr<T>() + lo * out(0), out(0),
                            weight(0), c.n_identity, gx + lo * dim + c.identity_begin, dim, /*accumulate=*/true);
    });
  }

  /// Weight and bias gradients, each layer's output features split over the threads (every sum
  /// over the batch stays inside one product: no reduction is split).
  void backward_weights(const T* x, const std::vector<at::Tensor>& acts, const std::vector<at::Tensor>& grads,
                        std::vector<at::Tensor>& gw, std::vector<at::Tensor>& gb) const {
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t k = 0; k < n_layers; ++k) {
        const int64_t o = out(k), i = in(k);
        const int64_t f0 = o * t0 / threads, f1 = o * t1 / threads;
        if (f1 <= f0) continue;
        const T* g = grads[size_t(k)].data_ptr<T>();
        const T* input = k == 0 ? x + c.identity_begin : acts[size_t(k - 1)].data_ptr<T>();
        const int64_t ld = k == 0 ? dim : i;
        if (gw[size_t(k)].defined())
          pae::nn::blas::gemm(true, false, f1 - f0, i, batch, g + f0, o, input, ld,
                              gw[size_t(k)].data_ptr<T>() + f0 * i, i);
        if (gb[size_t(k)].defined()) {
          pae::nn::blas::add_rows(g + f0, batch, o, f1 - f0, gb[size_t(k)].data_ptr<T>() + f0);
        }
      }
    });
  }
};

struct FusedAffineCoupling : public torch::autograd::Function<FusedAffineCoupling> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList layer_list,
                             int64_t identity_begin, int64_t n_identity, int64_t transformed_begin) {
    const std::vector<at::Tensor> layers(layer_list.begin(), layer_list.end());
    const CouplingColumns c{identity_begin, n_identity, transformed_begin};
    const int64_t b = x.size(0), d = x.size(1), nt = d - n_identity, n = int64_t(layers.size()) / 2;
    std::vector<at::Tensor> acts;
    for (int64_t k = 0; k + 1 < n; ++k) acts.push_back(torch::empty({b, layers[size_t(2 * k)].size(0)}, x.options()));
    auto params = torch::empty({b, 2 * nt}, x.options());
    auto y = torch::empty_like(x), l = torch::empty({b, nt}, x.options()), e = torch::empty({b, nt}, x.options());
    auto logdet = torch::empty({b}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fused_affine_coupling", [&] {
      Passes<scalar_t>(layers, c, b, d)
          .forward(x.data_ptr<scalar_t>(), acts, params.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                   l.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(), logdet.data_ptr<scalar_t>());
    });
    std::vector<at::Tensor> saved = {x, l, e};
    saved.insert(saved.end(), layers.begin(), layers.end());
    saved.insert(saved.end(), acts.begin(), acts.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["columns"] = std::vector<int64_t>{identity_begin, n_identity, transformed_begin};
    ctx->saved_data["n_layers"] = n;
    return {y, logdet};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list out_grads) {
    const auto saved = ctx->get_saved_variables();
    const auto cv = ctx->saved_data["columns"].toIntVector();
    const CouplingColumns c{cv[0], cv[1], cv[2]};
    const int64_t n = ctx->saved_data["n_layers"].toInt();
    const auto &x = saved[0], &l = saved[1], &e = saved[2];
    const std::vector<at::Tensor> layers(saved.begin() + 3, saved.begin() + 3 + 2 * n);
    const std::vector<at::Tensor> acts(saved.begin() + 3 + 2 * n, saved.end());
    auto gy = out_grads[0].defined() ? out_grads[0].contiguous() : torch::zeros_like(x);
    auto gl = out_grads[1].defined() ? out_grads[1].contiguous() : torch::zeros({x.size(0)}, x.options());
    tensor_list result(size_t(1 + 2 * n + 3));
    if (torch::GradMode::is_enabled()) {
      // create_graph: the gradient will be differentiated again; the passes' gradients carry no
      // graph, the reference's do (the same values, from tensor operations).
      std::vector<at::Tensor> wrt;
      std::vector<size_t> slots;
      for (size_t i = 0; i < size_t(1 + 2 * n); ++i)
        if (ctx->needs_input_grad(i)) wrt.push_back(i == 0 ? x : layers[i - 1]), slots.push_back(i);
      auto [y, ld] = affine_coupling_reference(x, layers, c);
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
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fused_affine_coupling_backward", [&] {
      const Passes<scalar_t> passes(layers, c, b, x.size(1));
      passes.backward_rows(x.data_ptr<scalar_t>(), acts, l.data_ptr<scalar_t>(), e.data_ptr<scalar_t>(),
                           gy.data_ptr<scalar_t>(), gl.data_ptr<scalar_t>(), grads,
                           gx.defined() ? gx.data_ptr<scalar_t>() : nullptr);
      passes.backward_weights(x.data_ptr<scalar_t>(), acts, grads, gw, gb);
    });
    result[0] = gx;
    for (int64_t k = 0; k < n; ++k)
      result[size_t(1 + 2 * k)] = gw[size_t(k)], result[size_t(2 + 2 * k)] = gb[size_t(k)];
    return result;
  }
};

}  // namespace

bool fused_affine_applies(const at::Tensor& x, const std::vector<at::Tensor>& layers, const CouplingColumns& c) {
  if (!x.device().is_cpu() || x.dim() != 2 || !x.is_contiguous() || c.n_identity < 1 || layers.size() < 2 ||
      layers.size() % 2 != 0)
    return false;
  const auto type = x.scalar_type();
  if (type == at::kFloat ? !pae::nn::blas::has_sgemm() : type == at::kDouble ? !pae::nn::blas::has_dgemm() : true)
    return false;
  for (const auto& t : layers)
    if (t.scalar_type() != type || !t.is_contiguous() || !t.device().is_cpu()) return false;
  return x.size(0) < (int64_t(1) << 31) / 4096;  // int-sized products
}

std::pair<at::Tensor, at::Tensor> affine_coupling_mlp(const at::Tensor& x, const std::vector<at::Tensor>& layers,
                                                      const CouplingColumns& c) {
  auto out = FusedAffineCoupling::apply(x, at::TensorList(layers), c.identity_begin, c.n_identity, c.transformed_begin);
  return {out[0], out[1]};
}

std::pair<at::Tensor, at::Tensor> affine_coupling_reference(const at::Tensor& x, const std::vector<at::Tensor>& layers,
                                                            const CouplingColumns& c) {
  const int64_t nt = x.size(1) - c.n_identity, n = int64_t(layers.size()) / 2;
  auto xi = x.narrow(1, c.identity_begin, c.n_identity);
  auto xt = x.narrow(1, c.transformed_begin, nt);
  auto h = xi;
  for (int64_t k = 0; k < n; ++k) {
    h = torch::linear(h, layers[size_t(2 * k)], layers[size_t(2 * k + 1)]);
    if (k + 1 < n) h = torch::relu(h);
  }
  auto p = h.view({x.size(0), nt, 2});
  auto log_scale = 3.0 * torch::tanh(p.select(2, 1) / 3.0);
  auto yt = xt * torch::exp(log_scale) + p.select(2, 0);
  auto y = c.identity_begin < c.transformed_begin ? torch::cat({xi, yt}, 1) : torch::cat({yt, xi}, 1);
  return {y, log_scale.sum(1)};
}

}  // namespace pae::flows::fused
