#include "pae/nn/dense.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>

namespace pae::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

/// Rows per block so that the blocks spread over the intra-op threads.
int64_t grain(int64_t n) {
  const int64_t t = at::get_num_threads();
  return std::max<int64_t>(1, (n + t - 1) / t);
}

/// y = x W^T + b, or relu of it: the products in blocks of rows (forward, grad-input) and of
/// output features (grad-weight), the ReLU and its mask applied inside the blocks.
struct ParallelLinear : public torch::autograd::Function<ParallelLinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            bool relu) {
    auto y = torch::empty({x.size(0), w.size(0)}, x.options());
    const auto wt = w.t();
    at::parallel_for(0, x.size(0), grain(x.size(0)), [&](int64_t lo, int64_t hi) {
      torch::NoGradGuard no_grad;  // grad mode is thread-local: off in the worker threads too
      auto out = y.slice(0, lo, hi);
      torch::addmm_out(out, b, x.slice(0, lo, hi), wt);
      if (relu) out.clamp_min_(0);
    });
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
    if (torch::GradMode::is_enabled()) {
      // create_graph: the gradient itself will be differentiated (Hessian-vector products,
      // gradient penalties). The blocked products below write into buffers outside autograd,
      // so here the same products run as plain, differentiable ops.
      if (relu) g = g * (saved[2] > 0).to(g.scalar_type());
      if (ctx->needs_input_grad(0)) gx = g.mm(w);
      if (ctx->needs_input_grad(1)) gw = g.t().mm(x);
      if (ctx->needs_input_grad(2)) gb = g.sum(0);
      return {gx, gw, gb, at::Tensor()};
    }
    // Blocks of rows: the ReLU's mask (when there is one), then grad-input from the masked rows.
    if (ctx->needs_input_grad(0)) gx = torch::empty_like(x);
    if (relu || gx.defined()) {
      auto masked = relu ? torch::empty_like(g) : g;
      at::parallel_for(0, g.size(0), grain(g.size(0)), [&](int64_t lo, int64_t hi) {
        torch::NoGradGuard no_grad;  // grad mode is thread-local: off in the worker threads too
        auto rows = masked.slice(0, lo, hi);
        if (relu) at::threshold_backward_out(rows, g.slice(0, lo, hi), saved[2].slice(0, lo, hi), 0);
        if (gx.defined()) {
          auto out = gx.slice(0, lo, hi);
          torch::mm_out(out, rows, w);
        }
      });
      g = masked;
    }
    if (ctx->needs_input_grad(1)) {
      gw = torch::empty_like(w);
      at::parallel_for(0, w.size(0), grain(w.size(0)), [&](int64_t lo, int64_t hi) {
        torch::NoGradGuard no_grad;  // grad mode is thread-local: off in the worker threads too
        auto out = gw.slice(0, lo, hi);
        torch::mm_out(out, g.slice(1, lo, hi).t(), x);
      });
    }
    if (ctx->needs_input_grad(2)) gb = g.sum(0);
    return {gx, gw, gb, at::Tensor()};
  }
};

bool use_parallel(const at::Tensor& x) {
  return x.device().is_cpu() && at::get_num_threads() > 1 && x.size(0) >= 32 &&
         (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble);
}

}  // namespace

at::Tensor dense(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == weight.size(1), "dense: expected x:[B,", weight.size(1), "], got ",
              x.sizes());
  if (!use_parallel(x)) return torch::linear(x, weight, bias);
  return ParallelLinear::apply(x.contiguous(), weight, bias, false);
}

at::Tensor dense_relu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == weight.size(1), "dense_relu: expected x:[B,", weight.size(1), "], got ",
              x.sizes());
  if (!use_parallel(x)) return torch::relu(torch::linear(x, weight, bias));
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
