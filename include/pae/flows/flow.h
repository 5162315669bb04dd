// Normalizing flows: one interface, one direction.
//
// DIRECTION: forward maps data x to noise z and returns (z, log|det dz/dx|) with log|det| of
// shape [B]; inverse maps noise to data and returns (x, log|det dx/dz|). For every transform,
// forward's and inverse's log|det| at corresponding points sum to zero. x, z: [B, D].
#pragma once
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pae/flows/options.h"
#include "pae/flows/spline.h"
#include "pae/util/registry.h"

namespace pae::flows {

using TensorPair = std::pair<torch::Tensor, torch::Tensor>;

class Transform : public torch::nn::Module {
 public:
  /// x:[B,D] -> (z:[B,D], log|det|:[B])
  virtual TensorPair forward(const torch::Tensor& x) = 0;
  /// z:[B,D] -> (x:[B,D], log|det|:[B])
  virtual TensorPair inverse(const torch::Tensor& z) = 0;
  /// Data-dependent initialisation from a batch of this transform's inputs (ActNorm); most
  /// transforms need none.
  virtual void initialize(const torch::Tensor& /*x*/) {}
};

/// Transforms applied in order (inverse in reverse order); log|det| summed.
class CompositeTransform : public Transform {
 public:
  void append(std::shared_ptr<Transform> t);
  TensorPair forward(const torch::Tensor& x) override;
  TensorPair inverse(const torch::Tensor& z) override;
  void initialize(const torch::Tensor& x) override;  ///< initialises each on its own input
  size_t size() const { return transforms_.size(); }

 private:
  std::vector<std::shared_ptr<Transform>> transforms_;
};

/// A flow from D-dimensional data to a standard normal base.
class Flow : public torch::nn::Module {
 public:
  Flow(int64_t dim, std::shared_ptr<Transform> transform);
  /// log p(x):[B] = log N(z; 0, I) + log|det dz/dx|
  torch::Tensor log_prob(const torch::Tensor& x);
  /// n samples: z ~ N(0, temperature^2 I) mapped through the inverse.
  torch::Tensor sample(int64_t n, double temperature = 1.0);
  TensorPair forward(const torch::Tensor& x) { return transform_->forward(x); }
  TensorPair inverse(const torch::Tensor& z) { return transform_->inverse(z); }
  void initialize(const torch::Tensor& x) { transform_->initialize(x); }
  int64_t dim() const { return dim_; }
  /// Sets the dropout rate of every conditioner (flow.dropout at construction).
  void set_dropout(double p);

 private:
  int64_t dim_;
  std::shared_ptr<Transform> transform_;
};

/// Builds a flow of `dim` dimensions from options (couplings, permutations, normalisations).
std::shared_ptr<Flow> build_flow(int64_t dim, const FlowOptions& options);

/// Factory of one transform for `dim` features; `layer` alternates coupling masks.
using TransformFactory = std::function<std::shared_ptr<Transform>(int64_t dim, const FlowOptions&, int64_t layer)>;

/// Explicit registry of every transform (lower-case names); tests sweep it.
class TransformRegistry : public Registry<TransformFactory> {
 public:
  static TransformRegistry& instance();
  std::shared_ptr<Transform> create(const std::string& name, int64_t dim, const FlowOptions& options,
                                    int64_t layer) const {
    return get(name)(dim, options, layer);
  }

 private:
  TransformRegistry() : Registry("flow transform") {}
};

}  // namespace pae::flows
