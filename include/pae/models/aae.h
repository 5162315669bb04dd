// The adversarial auto-encoder (Makhzani et al. 2015): an auto-encoder whose codes are matched
// to a prior by a GAN in latent space, the encoder being the generator.
#pragma once
#include <torch/nn/modules/container/sequential.h>

#include "pae/models/autoencoder.h"

namespace pae::models {

/// The AAE's own keys: the prior its codes are matched to, and the discriminator.
struct AaeOptions {
  std::string prior = "gaussian";                 ///< gaussian | mixture
  double prior_std = 1.0;                         ///< std of the Gaussian (of each component)
  int64_t prior_components = 10;                  ///< mixture: number of components
  std::string prior_layout = "circle";            ///< mixture: circle (dims 0, 1) | random centres
  double prior_radius = 4.0;                      ///< mixture: circle radius / std of random centres
  bool conditional = false;                       ///< labels (one-hot) go to the discriminator
  std::vector<int64_t> disc_hidden = {256, 256};  ///< discriminator MLP widths
  void visit(OptionVisitor& v, const ModelOptions& model);
};

/// Three parameter groups, each with its own optimizer (`groups.<name>` in a config):
///   "ae"   encoder + decoder: the reconstruction step (BCE or MSE, model.recon_loss);
///   "disc" the discriminator: prior samples are "real", encoded codes "fake";
///   "gen"  the encoder: makes its codes look real to the discriminator.
/// Each batch runs the three steps in that order. Priors: N(0, prior_std^2 I), or a mixture of
/// prior_components Gaussians of std prior_std centred on a circle of radius prior_radius in
/// the first two dimensions (prior_layout circle) or at fixed random points (random). With
/// model.conditional the discriminator also sees the one-hot label, and a code of label y is
/// matched to mixture component y (the semi-supervised AAE's prior).
class AdversarialAE : public AutoEncoder {
 public:
  AdversarialAE(const ModelOptions& options, const ImageShape& shape);
  torch::Tensor encode(const torch::Tensor& x) override { return encoder_->forward(x); }
  torch::Tensor decode_logits(const torch::Tensor& z) override { return decoder_->forward(z); }
  /// Reconstruction terms: "loss" (the recon objective), "recon", "mse" (per pixel).
  LossTerms loss(const torch::Tensor& x) override;
  /// Base scores plus "neg_disc_logit": how un-prior-like the discriminator finds the code.
  std::map<std::string, torch::Tensor> scores(const torch::Tensor& x, torch::Tensor* latents = nullptr) override;

  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> parameter_groups() override;
  void train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) override;

  /// n prior codes (uniform over mixture components), on the model's device.
  torch::Tensor sample_latents(int64_t n) override;
  /// Prior codes of the mixture components `component` ([B] int64), on the model's device.
  torch::Tensor sample_latents_of(const torch::Tensor& component);
  /// Discriminator logit ("real" = prior) of codes z:[B,D]; `labels` ([B] int64) are required
  /// with model.conditional and ignored otherwise.
  torch::Tensor discriminate(const torch::Tensor& z, const torch::Tensor& labels = {});
  /// Mixture centres [K,D] (zeros [1,D] for the Gaussian prior).
  const torch::Tensor& centres() const { return centres_; }

 private:
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr}, disc_{nullptr};
  AaeOptions aae_;
  torch::Tensor centres_;
};

}  // namespace pae::models
