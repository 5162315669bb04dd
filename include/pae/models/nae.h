// The normalized auto-encoder (Yoon, Noh & Park, ICML 2021): an auto-encoder whose
// reconstruction error is trained, in a second phase, to be a normalised energy.
#pragma once
#include <torch/nn/modules/container/sequential.h>

#include "pae/inference/langevin.h"
#include "pae/models/autoencoder.h"

namespace pae::models {

/// Latent codes live on the unit sphere (encode returns f(x) / |f(x)|); the energy is
/// E(x) = |x - g(f(x) / |f(x)|)|^2 / D. Two phases, two parameter groups over the same weights:
///   phase "ae"  (train.epochs, group "ae"):  minimise mean E(x) + encoder_l2 |theta_enc|^2;
///   phase "nae" (model.nae_epochs, group "nae"): minimise (mean E(x+) - mean E(x-)) / T
///     + gamma mean E(x-)^2 + encoder_l2 |theta_enc|^2, with negatives x- from on-manifold
///     initialisation: latent Langevin on E(g(z)) on the sphere (started from the replay buffer
///     with probability replay_ratio, else uniformly on the sphere), decode, then data-space
///     Langevin on E(x) (annealed noise, per-sample gradient clipping, pixels clamped).
/// The replay buffer is part of the checkpoint, so a resumed phase 2 continues the same chains.
/// Early stopping (train.patience) applies to phase 1 only.
class NormalizedAE : public AutoEncoder {
 public:
  NormalizedAE(const ModelOptions& options, const ImageShape& shape);
  torch::Tensor encode(const torch::Tensor& x) override;
  torch::Tensor decode_logits(const torch::Tensor& z) override { return decoder_->forward(z); }
  /// E(x):[B], per pixel.
  torch::Tensor energy(const torch::Tensor& x);
  /// Terms "loss" (mean energy), "recon", "mse".
  LossTerms loss(const torch::Tensor& x) override;
  /// "recon_mse" and its other name "energy" ("latent_norm" is 1 on the sphere: left out).
  std::map<std::string, torch::Tensor> scores(const torch::Tensor& x, torch::Tensor* latents = nullptr) override;
  /// Uniform on the sphere.
  torch::Tensor sample_latents(int64_t n) override;

  std::vector<pae::nn::Phase> phases(int64_t epochs) const override;
  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> parameter_groups() override;
  void train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) override;
  void save_state(torch::serialize::OutputArchive& archive) override;
  void load_state(torch::serialize::InputArchive& archive) override;

  /// n negative samples by the chains above (pushing the latent chain ends into the buffer).
  /// Statistics of the two chains go to the stats pointers when given.
  torch::Tensor sample_negatives(int64_t n, inference::LangevinStats* z_stats = nullptr,
                                 inference::LangevinStats* x_stats = nullptr);
  /// The negatives of the last phase-2 step (for pictures), on the CPU; undefined before.
  const torch::Tensor& last_negatives() const { return last_negatives_; }
  int64_t buffer_count() const { return buffer_count_; }
  const torch::Tensor& buffer() const { return buffer_; }

 private:
  torch::Tensor encoder_l2_term();
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr};
  torch::Tensor buffer_, last_negatives_;
  int64_t buffer_count_ = 0, buffer_head_ = 0;
};

}  // namespace pae::models
