#include "pae/models/classifier.h"

#include <torch/torch.h>

namespace pae::models {

Classifier::Classifier(std::string dataset, int64_t channels, int64_t height, int64_t width, int64_t classes)
    : signature_("classifier/" + dataset + "/" + std::to_string(channels) + "x" + std::to_string(height) + "x" +
                 std::to_string(width)) {
  conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 32, 3).padding(1)));
  conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)));
  fc1_ = register_module("fc1", torch::nn::Linear(64 * (height / 4) * (width / 4), 128));
  fc2_ = register_module("fc2", torch::nn::Linear(128, classes));
}

torch::Tensor Classifier::embed(const torch::Tensor& x) {
  auto h = torch::max_pool2d(torch::relu(conv1_(x)), 2);
  h = torch::max_pool2d(torch::relu(conv2_(h)), 2);
  return fc1_(h.flatten(1));
}

torch::Tensor Classifier::forward(const torch::Tensor& x) { return fc2_(torch::relu(embed(x))); }

double Classifier::accuracy(const torch::Tensor& images, const torch::Tensor& labels, int64_t batch) {
  torch::NoGradGuard no_grad;
  eval();
  const auto device = parameters().front().device();
  int64_t right = 0;
  for (int64_t i = 0; i < images.size(0); i += batch) {
    const auto x = images.slice(0, i, i + batch).to(device);
    right += forward(x).argmax(1).cpu().eq(labels.slice(0, i, i + batch)).sum().item<int64_t>();
  }
  return double(right) / double(std::max<int64_t>(images.size(0), 1));
}

void Classifier::train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) {
  auto loss = torch::cross_entropy_loss(forward(batch.x), batch.y);
  ctx.step("classifier", loss);
  ctx.log("loss", loss);
}

}  // namespace pae::models
