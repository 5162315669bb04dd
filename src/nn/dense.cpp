#include "pae/nn/dense.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "pae/nn/blas.h"

namespace pae::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

using blas::add_rows;
using blas::relu_in_place;
using blas::relu_mask;

/// The three blocked passes of a Dense layer on raw pointers (CPU, contiguous, float/double).
template <typename T>
struct RawBlocks {
  /// y[lo:hi] = x[lo:hi] W^T + b, then max(., 0) when relu. x:[B,in], w:[out,in].
  static void forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, at::Tensor& y, bool relu) {
    const int64_t in = w.size(1), out = w.size(0);
    const T *xs = x.data_ptr<T>(), *ws = w.data_ptr<T>(), *bs = b.data_ptr<T>();
    T* ys = y.data_ptr<T>();
    at::parallel_for(0, x.size(0), blas::row_grain(x.size(0)), [&](int64_t lo, int64_t hi) {
      // The bias first and the product added to it, as LibTorch's addmm does.
      for (int64_t r = lo; r < hi; ++r) std::copy(bs, bs + out, ys + r * out);
      blas::gemm(false, true, hi - lo, out, in, xs + lo * in, in, ws, in, ys + lo * out, out, /*accumulate=*/true);
      if (relu) relu_in_place(ys + lo * out, (hi - lo) * out);
    });
  }
  /// masked = g * (y > 0) when relu (else g itself is used), then gx[lo:hi] = masked[lo:hi] W, in
  /// blocks of rows. g, masked, y:[B,out].
  static void grad_input(const at::Tensor& g, at::Tensor& masked, const at::Tensor& y, const at::Tensor& w,
                         at::Tensor* gx, bool relu) {
    const int64_t in = w.size(1), out = w.size(0);
    const T* gs = g.data_ptr<T>();
    T* ms = relu ? masked.data_ptr<T>() : nullptr;
    const T* ys = relu ? y.data_ptr<T>() : nullptr;
    const T* ws = w.data_ptr<T>();
    T* gxs = gx ? gx->data_ptr<T>() : nullptr;
    at::parallel_for(0, g.size(0), blas::row_grain(g.size(0)), [&](int64_t lo, int64_t hi) {
      if (relu) relu_mask(gs + lo * out, ys + lo * out, ms + lo * out, (hi - lo) * out);
      const T* src = relu ? ms : gs;
      if (gxs) blas::gemm(false, false, hi - lo, in, out, src + lo * out, out, ws, in, gxs + lo * in, in);
    });
  }
  /// gw[lo:hi] = g[:, lo:hi]^T x and gb[lo:hi] = column sums of g, in blocks of output features.
  static void grad_weight(const at::Tensor& g, const at::Tensor& x, at::Tensor* gw, at::Tensor* gb) {
    const int64_t rows = g.size(0), out = g.size(1), in = x.size(1);
    const T *gs = g.data_ptr<T>(), *xs = x.data_ptr<T>();
    T* gws = gw ? gw->data_ptr<T>() : nullptr;
    T* gbs = gb ? gb->data_ptr<T>() : nullptr;
    at::parallel_for(0, out, blas::row_grain(out), [&](int64_t lo, int64_t hi) {
      if (gws) blas::gemm(true, false, hi - lo, in, rows, gs + lo, out, xs, in, gws + lo * in, in);
      if (gbs) add_rows(gs + lo, rows, out, hi - lo, gbs + lo);
    });
  }
};

/// Whether the raw blocks apply (x's layout unchecked with check_x false: the caller makes it
/// contiguous): the BLAS is in the process, w and `other` contiguous, one dtype, int-sized products.
bool raw(const at::Tensor& x, const at::Tensor& w, const at::Tensor& other, bool check_x = true) {
  const bool have = x.scalar_type() == at::kFloat ? blas::has_sgemm() : blas::has_dgemm();
  return have && (!check_x || x.is_contiguous()) && w.is_contiguous() && other.is_contiguous() &&
         w.scalar_type() == x.scalar_type() && other.scalar_type() == x.scalar_type() &&
         x.size(0) < (int64_t(1) << 31) / std::max<int64_t>(1, w.size(1));
}

/// y = x W^T + b, or relu of it: the products in blocks of rows (forward, grad-input) and of
/// output features (grad-weight), the ReLU and its mask applied inside the blocks.
struct ParallelLinear : public torch::autograd::Function<ParallelLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            bool relu) {
    auto y = torch::empty({x.size(0), w.size(0)}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dense", [&] { RawBlocks<scalar_t>::forward(x, w, b, y, relu); });
    ctx->save_for_backward({x, w, relu ? y : at::Tensor()});
    ctx->saved_data["relu"] = relu;
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const bool relu = ctx->saved_data["relu"].toBool();
    auto g = grads[0].contiguous();
    at::Tensor gx, gw, gb;
    if (torch::GradMode::is_enabled() || !raw(x, w, g)) {
      // create_graph: the gradient itself will be differentiated (Hessian-vector products,
      // gradient penalties). The blocked products below write into buffers outside autograd,
      // so here the same products run as plain, differentiable ops (as they do for an incoming
      // gradient of another dtype or layout than the blocks take).
      if (relu) g = g * (saved[2] > 0).to(g.scalar_type());
      if (ctx->needs_input_grad(0)) gx = g.mm(w);
      if (ctx->needs_input_grad(1)) gw = g.t().mm(x);
      if (ctx->needs_input_grad(2)) gb = g.sum(0);
      return {gx, gw, gb, at::Tensor()};
    }
    if (ctx->needs_input_grad(0)) gx = torch::empty_like(x);
    if (ctx->needs_input_grad(1)) gw = torch::empty_like(w);
    if (ctx->needs_input_grad(2)) gb = torch::empty({w.size(0)}, g.options());
    auto masked = relu ? torch::empty_like(g) : g;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dense_backward", [&] {
      if (relu || gx.defined())
        RawBlocks<scalar_t>::grad_input(g, masked, saved[2], w, gx.defined() ? &gx : nullptr, relu);
      if (gw.defined() || gb.defined())
        RawBlocks<scalar_t>::grad_weight(masked, x, gw.defined() ? &gw : nullptr, gb.defined() ? &gb : nullptr);
    });
    return {gx, gw, gb, at::Tensor()};
  }
};

/// The blocks: CPU float/double, a batch worth splitting, and the process's BLAS at hand (without
/// it, e.g. a LibTorch with a static MKL, LibTorch's own linear, whose BLAS threads itself); on one
/// thread only where the blocks' float products are faster than LibTorch's (oneDNN's sgemm).
bool use_parallel(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const bool faster_alone = x.scalar_type() == torch::kFloat && std::strcmp(blas::sgemm_library(), "onednn") == 0;
  return x.device().is_cpu() && (at::get_num_threads() > 1 || faster_alone) && x.size(0) >= 32 &&
         (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble) &&
         raw(x, w, b, /*check_x=*/false);  // dense() makes x contiguous
}

}  // namespace

at::Tensor dense(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == weight.size(1), "dense: expected x:[B,", weight.size(1), "], got ",
              x.sizes());
  if (!use_parallel(x, weight, bias)) return torch::linear(x, weight, bias);
  return ParallelLinear::apply(x.contiguous(), weight, bias, false);
}

at::Tensor dense_relu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == weight.size(1), "dense_relu: expected x:[B,", weight.size(1), "], got ",
              x.sizes());
  if (!use_parallel(x, weight, bias)) return torch::relu(torch::linear(x, weight, bias));
  return ParallelLinear::apply(x.contiguous(), weight, bias, true);
}

DenseImpl::DenseImpl(int64_t in_features, int64_t out_features) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  bias = register_parameter("bias", torch::empty({out_features}));
  // torch::nn::Linear's initialisation: Kaiming-uniform with a = sqrt(5), bias U(+-1/sqrt(in)).
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  const double bound = 1.0 / std::sqrt(double(in_features));
  bias.uniform_(-bound, bound);
}

}  // namespace pae::nn
