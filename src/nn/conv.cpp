#include "pae/nn/conv.h"

#include <torch/torch.h>

namespace pae::nn {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

std::vector<int64_t> vec(const at::Tensor& t) { return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()}; }

/// y = C^T x, where C is conv2d(., w, stride, padding) on inputs of y's size: w:[Cin_T, Cout_T, k, k]
/// is C's weight [out, in, k, k] as it stands.
struct TransposedConv : public torch::autograd::Function<TransposedConv> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef output_padding) {
    std::vector<int64_t> out_size = {x.size(0), w.size(1)};
    for (int64_t i = 0; i < 2; ++i)
      out_size.push_back((x.size(2 + i) - 1) * stride[size_t(i)] - 2 * padding[size_t(i)] + w.size(2 + i) +
                         output_padding[size_t(i)]);
    // Only the sizes of C's input are read.
    const auto shape_only = at::empty(out_size, x.options());
    const std::vector<int64_t> one = {1, 1}, zero = {0, 0};
    auto y = std::get<0>(at::convolution_backward(x.contiguous(), shape_only, w, c10::nullopt, stride, padding, one,
                                                  /*transposed=*/false, zero, /*groups=*/1, {true, false, false}));
    ctx->save_for_backward({x, w});
    ctx->saved_data["stride"] = torch::tensor(stride.vec());
    ctx->saved_data["padding"] = torch::tensor(padding.vec());
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    const auto g = grads[0].contiguous();
    const auto stride = vec(ctx->saved_data["stride"].toTensor());
    const auto padding = vec(ctx->saved_data["padding"].toTensor());
    const std::vector<int64_t> one = {1, 1}, zero = {0, 0};
    at::Tensor gx, gw;
    if (ctx->needs_input_grad(0)) gx = at::conv2d(g, w, {}, stride, padding);  // C g
    if (ctx->needs_input_grad(1))  // <C^T x, g> = <x, C g>: C's weight gradient with input g, output gradient x
      gw = std::get<1>(at::convolution_backward(x.contiguous(), g, w, c10::nullopt, stride, padding, one,
                                                /*transposed=*/false, zero, /*groups=*/1, {false, true, false}));
    return {gx, gw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor conv_transpose2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4 && x.size(1) == weight.size(0), "conv_transpose2d: input ", x.sizes(),
              " does not fit weight ", weight.sizes());
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && output_padding.size() == 2,
              "conv_transpose2d: stride, padding and output_padding need 2 entries each");
  auto y = TransposedConv::apply(x, weight, stride, padding, output_padding);
  return bias.defined() ? y + bias.view({1, -1, 1, 1}) : y;  // (an undefined tensor cannot enter a Function)
}

at::Tensor ConvTranspose2dImpl::forward(const at::Tensor& input, const c10::optional<at::IntArrayRef>& output_size) {
  const auto& o = options;
  const bool plain = o.groups() == 1 && (*o.dilation())[0] == 1 && (*o.dilation())[1] == 1 && !output_size;
  const bool cpu = input.device().is_cpu() && (input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble);
  if (!plain || !cpu || input.dim() != 4) return torch::nn::ConvTranspose2dImpl::forward(input, output_size);
  return conv_transpose2d(input, weight, bias, *o.stride(), *padding(), *o.output_padding());
}

}  // namespace pae::nn
