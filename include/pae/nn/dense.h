// A fully connected layer whose CPU matrix products use every intra-op thread.
//
// LibTorch hands a Linear layer's products to BLAS, which we run single-threaded (its threads
// and LibTorch's oversubscribe the cores otherwise). Dense splits the same products into
// blocks of rows (forward, grad-input) and of output features (grad-weight), one block per
// intra-op thread, each a single-threaded BLAS call: both cores do matrix work, nothing
// oversubscribes, and no reduction is split, so results do not depend on thread timing.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace pae::nn {

/// y = x W^T + b, x:[B,in] -> y:[B,out]; parameters named weight [out,in] and bias [out] and
/// initialised as torch::nn::Linear does.
at::Tensor dense(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

/// relu(dense(x, weight, bias)), the ReLU and its backward mask applied inside the threaded blocks
/// (no separate pass, no extra tensor operation).
at::Tensor dense_relu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

class DenseImpl : public torch::nn::Module {
 public:
  DenseImpl(int64_t in_features, int64_t out_features);
  at::Tensor forward(const at::Tensor& x) { return dense(x, weight, bias); }
  at::Tensor forward_relu(const at::Tensor& x) { return dense_relu(x, weight, bias); }
  at::Tensor weight, bias;
};
TORCH_MODULE(Dense);

}  // namespace pae::nn
