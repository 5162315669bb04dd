// A transposed convolution computed as the adjoint of a convolution.
//
// LibTorch 1.13 runs ConvTranspose2d on the CPU through its generic im2col kernels
// (slow_conv_transpose2d), 3-7x slower than the oneDNN (mkldnn) convolutions beside it.
// A transposed convolution is the input-gradient of the convolution with the same weight, so
// its forward is that convolution's backward-data, its grad-input that convolution's forward
// and its grad-weight that convolution's backward-weight: the oneDNN primitives, the same
// arithmetic up to the order of the sums. Same parameters (names, shapes, initialisation) as
// torch::nn::ConvTranspose2d, so checkpoints are interchangeable.
#pragma once
#include <torch/nn/modules/conv.h>

namespace pae::nn {

/// conv_transpose2d(x, w, b, stride, padding, output_padding) for groups = 1, dilation = 1;
/// differentiable twice (its backward is built from differentiable convolutions).
at::Tensor conv_transpose2d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef output_padding);

class ConvTranspose2dImpl : public torch::nn::ConvTranspose2dImpl {
 public:
  explicit ConvTranspose2dImpl(const torch::nn::ConvTranspose2dOptions& options)
      : torch::nn::ConvTranspose2dImpl(options) {}
  /// CPU float/double tensors with groups = 1 and dilation = 1 take conv_transpose2d above;
  /// anything else (CUDA, where cuDNN does this already; an explicit output_size) LibTorch's own
  /// module. (The signature is the base's: Sequential fills the default argument.)
  at::Tensor forward(const at::Tensor& input, const c10::optional<at::IntArrayRef>& output_size = c10::nullopt);
};
TORCH_MODULE(ConvTranspose2d);

}  // namespace pae::nn
