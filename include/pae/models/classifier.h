// The domain classifier of FID: conv 32 - pool - conv 64 - pool - fc 128 - fc classes. Its 128-d
// penultimate activations are the "domain" features of pae-eval fid.
#pragma once
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <string>

#include "pae/nn/trainable.h"

namespace pae::models {

/// A Trainable (one group "classifier"): cross-entropy steps, validation accuracy monitored.
class Classifier : public torch::nn::Module, public pae::nn::Trainable {
 public:
  /// `dataset` names what it classifies (part of its signature: a classifier of another
  /// dataset is refused on load).
  Classifier(std::string dataset, int64_t channels, int64_t height, int64_t width, int64_t classes);
  /// x:[B,C,H,W] -> 128-d features (before the last ReLU).
  torch::Tensor embed(const torch::Tensor& x);
  /// x -> logits:[B,classes]
  torch::Tensor forward(const torch::Tensor& x);
  /// Fraction of (images, labels) classified right, in batches on the network's device.
  double accuracy(const torch::Tensor& images, const torch::Tensor& labels, int64_t batch = 500);

  torch::nn::Module& module() override { return *this; }
  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> parameter_groups() override {
    return {{"classifier", parameters()}};
  }
  void train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) override;
  pae::nn::Terms validate(const pae::nn::Batch& data, int64_t batch_size) override {
    return {{"accuracy", accuracy(data.x, data.y, batch_size)}};
  }
  pae::nn::Monitor monitor() const override { return {"accuracy", false}; }
  /// classifier/<dataset>/CxHxW
  std::string signature() const override { return signature_; }

 private:
  std::string signature_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

}  // namespace pae::models
