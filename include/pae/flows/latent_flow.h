// The PAE's second stage: a flow fitted on an auto-encoder's latents (Böhm & Seljak 2020).
#pragma once
#include <map>
#include <memory>
#include <string>

#include "pae/config.h"
#include "pae/flows/flow.h"

namespace pae::flows {

/// A flow on standardised latents: u = flow((z - mean) / std). The standardisation is part of
/// the model (saved with it), so log_prob and sample work in the AE's own latent units.
class LatentFlow : public torch::nn::Module {
 public:
  LatentFlow(int64_t dim, const FlowOptions& options);
  /// z:[B,D] -> log p(z):[B] in nats, including the standardisation's Jacobian.
  torch::Tensor log_prob(const torch::Tensor& z);
  /// n latents from the flow, base noise scaled by `temperature`.
  torch::Tensor sample(int64_t n, double temperature = 1.0);
  /// z -> u (the flow's Gaussian space) and back.
  torch::Tensor to_gaussian(const torch::Tensor& z);
  torch::Tensor from_gaussian(const torch::Tensor& u);
  /// Sets mean/std from training latents and runs data-dependent initialisation.
  void fit_standardisation(const torch::Tensor& z);
  Flow& flow() { return *flow_; }
  int64_t dim() const { return flow_->dim(); }

 private:
  std::shared_ptr<Flow> flow_;
  torch::Tensor mean_, std_;
};

/// Where the latents come from.
struct LatentSources {
  std::string train, val, test;  ///< .npy files [N,D]; val and test may be empty
};

/// Latent files of an auto-encoder run directory (RUN/latents/{train,val,test}.npy).
LatentSources latents_of_run(const std::string& ae_run);

struct FlowRunOptions {
  std::string run_dir;
  bool resume = false, force = false, quiet = false;
};

struct FlowFitSummary {
  int64_t epochs = 0;
  double samples_per_second = 0;
  std::map<std::string, double> mean_log_prob;     ///< per split, nats per sample
  std::map<std::string, double> gaussian_log_prob; ///< full-covariance Gaussian baseline
};

/// Fits config.flow on the latents with config.train (epochs, batch, lr schedule,
/// latent_noise, patience, dtype) into run_dir; writes log p(z) of each split as .npy.
FlowFitSummary fit_latent_flow(const Config& config, const LatentSources& latents, const FlowRunOptions& options);

/// Loads a fitted flow directory (config.yml + checkpoints/best.pt); errors name the files.
std::shared_ptr<LatentFlow> load_latent_flow(const std::string& flow_dir, Config* config_out = nullptr);

/// Mean log-density of `test` under a full-covariance Gaussian fitted to `train` (float64).
double gaussian_mean_log_prob(const torch::Tensor& train, const torch::Tensor& test);

/// A content hash of a latent file (FNV-1a of its values), stored with the flow so that a flow
/// is never applied to another AE's latents silently.
std::string latent_checksum(const torch::Tensor& z);

}  // namespace pae::flows
