// The denoising normalizing flow (DNF; Horvat & Pfister, NeurIPS 2021, ../shared/seeds/003):
// a density on a d-dimensional manifold inside D dimensions. The data are inflated with Gaussian
// noise of std sigma; an outer flow f: R^D -> R^D maps them to h = [h_m, v], whose first d
// coordinates h_m are the manifold's chart and whose other D - d, v, are pushed to zero; an inner
// flow g: R^d -> R^d maps the chart to u ~ N(0, I_d). One loss trains both: the inflated data's
// negative log-likelihood plus a denoising reconstruction f^-1([h_m, 0]) of the clean data.
//
//   log p(x~) = log N(u; 0, I_d) + log N(v; 0, sigma^2 I_{D-d}) + log|det df/dx| + log|det dg/dh_m|
//
// Sampling: u ~ N(0, I_d), h_m = g^-1(u), v = 0, x = f^-1([h_m, 0]). Encoding: u = g(h_m(x)).
#pragma once
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>

#include "pae/flows/flow.h"
#include "pae/flows/options.h"
#include "pae/nn/trainable.h"

namespace pae::flows {

struct DnfOptions {
  int64_t data_dim = 2;              ///< D
  int64_t manifold_dim = 1;          ///< d, 1 <= d < D
  double sigma = 0.1;                ///< inflation noise std (the authors' thin spiral: sigma^2 = 0.01)
  double recon_weight = 1.0;         ///< lambda, on the element-mean squared error of the denoised data
  double off_manifold_weight = 0.0;  ///< on mean(v^2)
  FlowOptions outer, inner;          ///< f (dimension D) and g (dimension d)
};

/// What the outer and inner flows make of a batch x:[B, D].
struct DnfCode {
  torch::Tensor chart;    ///< h_m: [B, d]
  torch::Tensor off;      ///< v: [B, D - d]
  torch::Tensor u;        ///< g(h_m): [B, d]
  torch::Tensor log_det;  ///< log|det df/dx| + log|det dg/dh_m|: [B]
};

/// The DNF's loss terms on one batch (means over the batch).
struct DnfLoss {
  torch::Tensor total;         ///< nll + recon_weight * recon + off_manifold_weight * off_manifold
  torch::Tensor nll;           ///< -log p(x~) in nats
  torch::Tensor recon;         ///< mean over elements of (f^-1([h_m(x~), 0]) - x)^2
  torch::Tensor off_manifold;  ///< mean of v(x~)^2
};

/// The DNF, trainable by the engine: one parameter group ("dnf": f and g together), one phase.
/// A training batch is inflated with noise drawn per sample (nn::sample_randn_like: the same on
/// any number of ranks); validation measures the same loss on the clean data.
class DenoisingFlow : public torch::nn::Module, public nn::Trainable {
 public:
  explicit DenoisingFlow(const DnfOptions& options);

  // nn::Trainable
  torch::nn::Module& module() override { return *this; }
  std::vector<std::pair<std::string, std::vector<at::Tensor>>> parameter_groups() override;
  void train_step(const nn::Batch& batch, nn::StepContext& ctx) override;
  nn::Terms validate(const nn::Batch& data, int64_t batch_size) override;
  std::string signature() const override;
  at::Tensor sample(int64_t n) override { return sample(n, 1.0); }

  DnfCode code(const torch::Tensor& x);
  /// log p(x~):[B], the inflated density.
  torch::Tensor log_prob(const torch::Tensor& x);
  /// The density on the manifold: the inflated density times (2 pi sigma^2)^((D-d)/2), in log.
  torch::Tensor log_prob_on_manifold(const torch::Tensor& x);
  /// Points whose ||v||^2 exceeds sigma^2 / 3: off the manifold, where the density above does not hold.
  torch::Tensor off_manifold(const torch::Tensor& x);
  /// u = g(h_m(x)):[B, d].
  torch::Tensor encode(const torch::Tensor& x);
  /// x = f^-1([g^-1(u), 0]):[B, D].
  torch::Tensor decode(const torch::Tensor& u);
  /// The point of the manifold for x: f^-1([h_m(x), 0]).
  torch::Tensor project(const torch::Tensor& x);
  /// n samples: u ~ N(0, temperature^2 I_d), decoded.
  torch::Tensor sample(int64_t n, double temperature);
  /// The training loss on clean data x with the inflation noise eps ~ N(0, I) given (x~ = x + sigma eps).
  DnfLoss loss(const torch::Tensor& x, const torch::Tensor& eps);

  const DnfOptions& options() const { return options_; }
  Flow& outer() { return *outer_; }
  Flow& inner() { return *inner_; }

 private:
  /// log p(x~) from x~'s code.
  torch::Tensor log_prob_of(const DnfCode& c) const;
  /// f^-1([chart, 0]).
  torch::Tensor project_chart(const torch::Tensor& chart);

  DnfOptions options_;
  std::shared_ptr<Flow> outer_, inner_;
};

}  // namespace pae::flows
