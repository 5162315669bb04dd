// The normalized auto-encoder (Yoon, Noh & Park, ICML 2021): an auto-encoder whose
// reconstruction error is trained, in a second phase, to be a normalised energy.
#pragma once
#include <torch/nn/modules/container/sequential.h>

#include "pae/inference/langevin.h"
#include "pae/models/autoencoder.h"

namespace pae::models {

/// The NAE's own keys: phase 2's length, its loss, and the chains that draw its negatives.
struct NaeOptions {
  int64_t nae_epochs = 50;      ///< epochs of phase 2
  int64_t nae_batches = 0;      ///< batches per phase-2 epoch (0: a full pass over the data)
  double gamma = 1.0;           ///< weight of mean E(x-)^2
  double temperature = 1.0;     ///< T in (E(x+) - E(x-)) / T and in the chains' drift
  double encoder_l2 = 1e-4;     ///< weight of ||theta_enc||^2 (both phases)
  int64_t buffer_size = 10000;  ///< replay buffer of latent chain ends
  double replay_ratio = 0.95;   ///< fraction of latent chains restarted from the buffer
  int64_t z_steps = 10;         ///< latent chain (on the sphere): steps, step size, noise
  double z_step_size = 0.2;
  double z_noise = 0.05;
  int64_t x_steps = 50;  ///< data-space chain: steps, step size, noise (annealed sigma/(1+t))
  double x_step_size = 10.0;
  double x_noise = 0.05;
  double x_grad_clip = 0.01;  ///< per-sample gradient norm limit of the data-space chain
  /// What x_grad_clip limits: "sample" (each sample's gradient, as the paper states) or "row"
  /// (each image row's, what the authors' code does: its clip takes the norm over the last axis)
  std::string x_grad_clip_per = "sample";
  int64_t chain_groups = 2;  ///< negatives drawn in this many groups with their own random streams
  void visit(OptionVisitor& v, const ModelOptions& model);
};

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
  NaeOptions nae_;
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr};
  torch::Tensor buffer_, last_negatives_;
  int64_t buffer_count_ = 0, buffer_head_ = 0;
};

}  // namespace pae::models
