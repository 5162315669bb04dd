// The auto-encoder family: one interface, models registered by name.
//
// Every model maps x:[B,C,H,W] in [0,1] to a latent z:[B,D] and back, owns its loss and its
// training step (so one trainer loop serves every family), and defines per-sample scores
// that the OoD evaluation can use.
#pragma once
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pae/config.h"
#include "pae/models/nets.h"

namespace pae::models {

/// Batch-mean loss for optimisation plus named, detached scalar terms for logging.
struct LossTerms {
  torch::Tensor loss;                                        ///< scalar, differentiable
  std::vector<std::pair<std::string, torch::Tensor>> terms;  ///< scalars, detached
};

class AutoEncoder : public torch::nn::Module {
 public:
  AutoEncoder(ModelOptions options, ImageShape shape) : options_(std::move(options)), shape_(shape) {}

  /// x:[B,C,H,W] -> z:[B,D] (the posterior mean for stochastic encoders).
  virtual torch::Tensor encode(const torch::Tensor& x) = 0;
  /// z:[B,D] -> decoder logits:[B,C,H,W].
  virtual torch::Tensor decode_logits(const torch::Tensor& z) = 0;
  /// z:[B,D] -> mean image:[B,C,H,W] in [0,1].
  torch::Tensor decode(const torch::Tensor& z) { return torch::sigmoid(decode_logits(z)); }
  /// x -> reconstruction in [0,1] (through the posterior mean).
  torch::Tensor reconstruct(const torch::Tensor& x) { return decode(encode(x)); }

  /// Loss on a batch (mean over the batch); terms include "mse" (per pixel), always in
  /// evaluation mode (families may skip it while training, where it is only a report).
  virtual LossTerms loss(const torch::Tensor& x) = 0;

  /// Per-sample scores (higher = more anomalous unless the name says otherwise), each [B].
  /// Base: "recon_mse" (per pixel) and "latent_norm". Families add their own. When `latents`
  /// is given it receives encode(x), so callers that also need z do not encode twice.
  virtual std::map<std::string, torch::Tensor> scores(const torch::Tensor& x, torch::Tensor* latents = nullptr);

  /// One optimisation step on a batch; returns the detached terms.
  virtual LossTerms train_step(const torch::Tensor& x, torch::optim::Optimizer& optimizer, double grad_clip);

  /// n decodes of codes drawn from N(0, I).
  torch::Tensor sample_prior(int64_t n);

  int64_t latent_dim() const { return options_.latent_dim; }
  const ImageShape& image_shape() const { return shape_; }
  const ModelOptions& options() const { return options_; }

 protected:
  ModelOptions options_;
  ImageShape shape_;
};

using AutoEncoderFactory = std::function<std::shared_ptr<AutoEncoder>(const ModelOptions&, const ImageShape&)>;

/// Explicit registry of auto-encoder families (lower-case names).
class AutoEncoderRegistry {
 public:
  static AutoEncoderRegistry& instance();
  void add(const std::string& name, AutoEncoderFactory factory);
  std::shared_ptr<AutoEncoder> create(const ModelOptions& options, const ImageShape& shape) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, AutoEncoderFactory> factories_;
};

/// Builds the model named by options.type for images of `shape`.
std::shared_ptr<AutoEncoder> build_autoencoder(const ModelOptions& options, const ImageShape& shape);

}  // namespace pae::models
