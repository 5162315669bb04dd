// The PAE's second stage: a flow on an auto-encoder's latents (Böhm & Seljak 2020).
#pragma once
#include <memory>
#include <string>

#include "pae/flows/flow.h"
#include "pae/nn/trainable.h"

namespace pae::flows {

/// A flow on standardised latents: u = flow((z - mean) / std). The standardisation is part of
/// the model (saved with it), so log_prob and sample work in the AE's own latent units.
/// As a Trainable (one group "flow") it minimises the mean negative log-likelihood of its
/// batches, with Gaussian noise added to them (the PAE's latent noise) whose std is
/// `set_training_noise`'s value times each dimension's std: a fraction of the standardised scale.
class LatentFlow : public torch::nn::Module, public pae::nn::Trainable {
 public:
  LatentFlow(int64_t dim, const FlowOptions& options);
  /// z:[B,D] -> log p(z):[B] in nats, including the standardisation's Jacobian.
  torch::Tensor log_prob(const torch::Tensor& z);
  /// n latents from the flow, base noise scaled by `temperature`.
  torch::Tensor sample(int64_t n, double temperature);
  /// z -> u (the flow's Gaussian space) and back.
  torch::Tensor to_gaussian(const torch::Tensor& z);
  torch::Tensor from_gaussian(const torch::Tensor& u);
  /// Sets mean/std from training latents and runs data-dependent initialisation.
  void fit_standardisation(const torch::Tensor& z);
  /// Mean log p(z) over z (any dtype, CPU), in chunks, without gradients: per-sample values
  /// (float, the flow's dtype) go to `per_sample` when given.
  double mean_log_prob(const torch::Tensor& z, torch::Tensor* per_sample = nullptr);
  Flow& flow() { return *flow_; }
  int64_t dim() const { return flow_->dim(); }
  void set_training_noise(double std) { noise_ = std; }
  /// Conditioner dropout `options.dropout` until epoch floor(options.dropout_anneal * epochs),
  /// then falling linearly to 0 at epoch `epochs` (train_step sets it from the engine's epoch, so
  /// a resumed run continues the same schedule).
  void set_dropout_schedule(int64_t epochs) { epochs_ = epochs; }
  /// The dropout of (1-based) epoch `epoch` under that schedule.
  double dropout_at(int64_t epoch) const;

  // Trainable
  torch::nn::Module& module() override { return *this; }
  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> parameter_groups() override {
    return {{"flow", parameters()}};
  }
  void train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) override;
  /// {"nll", "log_prob"} on the validation latents.
  pae::nn::Terms validate(const pae::nn::Batch& data, int64_t batch_size) override;
  pae::nn::Monitor monitor() const override { return {"nll", true}; }
  /// flow/<type>/d<dim>/<dtype>
  std::string signature() const override;
  torch::Tensor sample(int64_t n) override { return sample(n, 1.0); }

 private:
  std::string type_;
  std::shared_ptr<Flow> flow_;
  torch::Tensor mean_, std_;
  double noise_ = 0;
  double dropout_ = 0, anneal_ = 1, current_dropout_ = 0;
  int64_t epochs_ = 0;
};

/// The chi-square quantile of `dim` degrees of freedom at probability p (bisection on the CDF).
double chi2_quantile(int64_t dim, double p);

/// The fraction of `z` whose Gaussian-space image u = flow(z) lies in the base's typical set: |u|^2
/// within the central 99% of chi-square(D). About 0.99 when the flow's prior fits the latents; a
/// lower fraction says how many latents sit where the prior puts little mass (the PAE's prior check).
double typical_set_fraction(LatentFlow& flow, const torch::Tensor& z);

/// Mean log-density of `test` under a full-covariance Gaussian fitted to `train` (float64).
double gaussian_mean_log_prob(const torch::Tensor& train, const torch::Tensor& test);

/// A content hash of a latent file (FNV-1a of its values), stored with the flow so that a flow
/// is never applied to another AE's latents silently.
std::string latent_checksum(const torch::Tensor& z);

}  // namespace pae::flows
