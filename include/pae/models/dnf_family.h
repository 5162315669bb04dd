// The denoising normalizing flow as a model family (`model.type: dnf`): flows::DenoisingFlow on
// the data flattened to vectors, trained, saved, encoded and evaluated by the same run scaffold
// and programs as the auto-encoders (its latents are the DNF's u, model.latent_dim = d).
#pragma once
#include "pae/flows/dnf.h"
#include "pae/models/autoencoder.h"

namespace pae::models {

/// The DNF's own keys; defaults are the authors' thin-spiral settings (their code: 9 outer
/// rational-quadratic layers with 5 bins and tail bound 3, LU-linear layers between them,
/// residual conditioners; sigma^2 = 0.01, lambda = 1).
struct DnfFamilyOptions {
  double sigma = 0.1;                ///< inflation noise std, the same at training and evaluation
  double recon_weight = 1.0;         ///< lambda, on the element-mean MSE of the denoised data
  double off_manifold_weight = 0.0;  ///< on mean(v^2)
  int64_t outer_layers = 9;          ///< f: R^D -> R^D
  int64_t inner_layers = 3;          ///< g: R^d -> R^d
  int64_t flow_hidden = 64;          ///< conditioner width (both flows)
  int64_t flow_blocks = 2;           ///< conditioner residual blocks (both flows)
  int64_t bins = 5;
  double tail_bound = 3.0;
  uint64_t flow_seed = 0;  ///< the flows' fixed random permutations
  void visit(OptionVisitor& v, const ModelOptions& model);
  /// The flows' options for data of dimension D and a manifold of dimension d.
  flows::DnfOptions dnf_options(int64_t data_dim, int64_t manifold_dim) const;
};

/// Images or vectors x:[B,C,H,W] are flattened to [B, D = C*H*W]; encode gives u:[B, d]; decode
/// gives f^-1([g^-1(u), 0]) reshaped (not squashed: a point of the learned manifold). Training
/// draws the inflation noise per batch; evaluation (loss, scores) uses the clean data.
class DenoisingFlowAE : public AutoEncoder {
 public:
  DenoisingFlowAE(const ModelOptions& options, const ImageShape& shape);
  torch::Tensor encode(const torch::Tensor& x) override;
  torch::Tensor decode(const torch::Tensor& z) override;
  /// The DNF has no logits: an error.
  torch::Tensor decode_logits(const torch::Tensor& z) override;
  /// Clean-data terms: "loss", "nll" (nats, inflated density), "recon" and "mse" (the denoised
  /// projection's element-mean squared error), "off_manifold" (mean v^2).
  LossTerms loss(const torch::Tensor& x) override;
  /// Base scores plus "nll": -log p(x), the inflated density.
  std::map<std::string, torch::Tensor> scores(const torch::Tensor& x, torch::Tensor* latents = nullptr) override;
  torch::Tensor log_density(const torch::Tensor& x) override;

  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> parameter_groups() override;
  void train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) override;
  std::string signature() const override;

  flows::DenoisingFlow& flow() { return *dnf_; }

 private:
  std::shared_ptr<flows::DenoisingFlow> dnf_;
};

}  // namespace pae::models
