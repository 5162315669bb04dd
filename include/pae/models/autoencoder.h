// The auto-encoder family: one interface, models registered by name.
//
// Every model maps x:[B,C,H,W] in [0,1] to a latent z:[B,D] and back, owns its loss and its
// training step (so one trainer loop serves every family), and defines per-sample scores
// that the OoD evaluation can use.
#pragma once
#include <torch/nn/module.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pae/data/dataset.h"
#include "pae/models/nets.h"
#include "pae/models/options.h"
#include "pae/nn/trainable.h"
#include "pae/util/registry.h"

namespace pae::models {

/// Batch-mean loss for optimisation plus named, detached scalar terms for logging.
struct LossTerms {
  torch::Tensor loss;                                        ///< scalar, differentiable
  std::vector<std::pair<std::string, torch::Tensor>> terms;  ///< scalars, detached
};

/// An auto-encoder is a Trainable: the engine runs its train_step (one parameter group "ae"
/// for the AE and the beta-VAE) and its validate (the loss terms on the validation set).
class AutoEncoder : public torch::nn::Module, public pae::nn::Trainable {
 public:
  AutoEncoder(ModelOptions options, ImageShape shape) : options_(std::move(options)), shape_(shape) {}

  /// x:[B,C,H,W] -> z:[B,D] (the posterior mean for stochastic encoders).
  virtual torch::Tensor encode(const torch::Tensor& x) = 0;
  /// z:[B,D] -> decoder logits:[B,C,H,W].
  virtual torch::Tensor decode_logits(const torch::Tensor& z) = 0;
  /// z:[B,D] -> mean image:[B,C,H,W]: sigmoid(decode_logits(z)), in [0,1], unless a family
  /// decodes otherwise (the DNF decodes to data through its flow's inverse).
  virtual torch::Tensor decode(const torch::Tensor& z) { return torch::sigmoid(decode_logits(z)); }
  /// log p(x):[B] of the family's own density of the data where it has one (the DNF's inflated
  /// density, nats); undefined for families without one.
  virtual torch::Tensor log_density(const torch::Tensor& /*x*/) { return {}; }
  /// x -> reconstruction in [0,1] (through the posterior mean).
  torch::Tensor reconstruct(const torch::Tensor& x) { return decode(encode(x)); }

  /// Loss on a batch (mean over the batch); terms include "mse" (per pixel), always in
  /// evaluation mode (families may skip it while training, where it is only a report).
  virtual LossTerms loss(const torch::Tensor& x) = 0;

  /// Per-sample scores (higher = more anomalous unless the name says otherwise), each [B].
  /// Base: "recon_mse" (per pixel) and "latent_norm". Families add their own. When `latents`
  /// is given it receives encode(x), so callers that also need z do not encode twice.
  virtual std::map<std::string, torch::Tensor> scores(const torch::Tensor& x, torch::Tensor* latents = nullptr);

  /// Mean loss terms over `images` (CPU or device), in evaluation mode without gradients,
  /// batched by `batch_size`; each batch weighted by its size.
  pae::nn::Terms evaluate(const torch::Tensor& images, int64_t batch_size);

  /// n codes from the family's prior, on the model's device (N(0, I) unless a family says
  /// otherwise: the AAE draws from the prior it matched its codes to).
  virtual torch::Tensor sample_latents(int64_t n);
  /// n decodes of sample_latents(n).
  torch::Tensor sample_prior(int64_t n) { return decode(sample_latents(n)); }

  // Trainable: one group "ae"; the step minimises loss(x) and logs its terms.
  torch::nn::Module& module() override { return *this; }
  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> parameter_groups() override {
    return {{"ae", parameters()}};
  }
  void train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) override;
  pae::nn::Terms validate(const pae::nn::Batch& data, int64_t batch_size) override {
    return evaluate(data.x, batch_size);
  }
  /// type/arch/z<latent>/CxHxW, checked when a checkpoint is loaded.
  std::string signature() const override;
  torch::Tensor sample(int64_t n) override { return sample_prior(n); }

  int64_t latent_dim() const { return options_.latent_dim; }
  const ImageShape& image_shape() const { return shape_; }
  const ModelOptions& options() const { return options_; }

 protected:
  ModelOptions options_;
  ImageShape shape_;
};

/// Per-image reconstruction negative log-likelihood from decoder logits, [B]: "bce" /
/// "bernoulli" (summed over pixels), "gaussian" with pixel std `sigma` (nats), else "mse"
/// (mean over pixels).
torch::Tensor recon_nll(const std::string& kind, const torch::Tensor& logits, const torch::Tensor& x, double sigma);

using AutoEncoderFactory = std::function<std::shared_ptr<AutoEncoder>(const ModelOptions&, const ImageShape&)>;

/// A model family as registered: how to build it and which keys of the `model` section it
/// reads beyond type and latent_dim (the config walks these, so each key is written once, in
/// its family's file).
struct ModelFamily {
  AutoEncoderFactory create;
  /// Visits the family's own options struct (held in ModelOptions::family<T>()).
  std::function<void(ModelOptions&, OptionVisitor&)> visit_options;
  /// Whether the shared network keys (arch, hidden, channels, ...) apply.
  bool uses_networks = true;
};

/// A family whose own keys are those of `Options`, a struct with
/// `void visit(OptionVisitor&, const ModelOptions&)`.
template <class Options>
ModelFamily family_with_options(AutoEncoderFactory create, bool uses_networks = true) {
  return {std::move(create), [](ModelOptions& m, OptionVisitor& v) { m.family<Options>().visit(v, m); }, uses_networks};
}

/// The plain AE's own keys.
struct AeOptions {
  /// What the decoder's last layer goes through: sigmoid (images in [0, 1]) or identity (real-valued
  /// data such as vectors; recon_loss mse).
  std::string output = "sigmoid";
  void visit(OptionVisitor& v, const ModelOptions& model);
};

/// The beta-VAE's own keys.
struct VaeOptions {
  double beta = 1.0;   ///< weight of the KL term
  double sigma = 0.1;  ///< gaussian likelihood: fixed pixel standard deviation
  void visit(OptionVisitor& v, const ModelOptions& model);
};

/// The auto-encoder families by model.type.
class AutoEncoderRegistry : public Registry<ModelFamily> {
 public:
  static AutoEncoderRegistry& instance();
  std::shared_ptr<AutoEncoder> create(const ModelOptions& options, const ImageShape& shape) const {
    return get(options.type).create(options, shape);
  }

 private:
  AutoEncoderRegistry() : Registry("model.type") {}
};

/// Builds the model named by options.type for images of `shape`.
std::shared_ptr<AutoEncoder> build_autoencoder(const ModelOptions& options, const ImageShape& shape);

}  // namespace pae::models
