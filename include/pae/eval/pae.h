// The Pae bundle: an auto-encoder run plus, optionally, a flow run fitted on its latents,
// checked to belong together, with encode / decode / log p(z) / sample / interpolate in one
// place. Every evaluation (eval/reports.h) and the sampling programs take one.
//
// Precision: the AE works in float32; the flow may be float64 (train.dtype). Latents cross
// over inside these functions, so callers never convert.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pae/config.h"

namespace pae::models {
class AutoEncoder;
}
namespace pae::flows {
class LatentFlow;
}

namespace pae::eval {

class Pae {
 public:
  /// Loads RUN's model checkpoint (config train.model_checkpoint) and, when flow_run is not
  /// empty, FLOW's; refuses a flow fitted on other latents (dimension, then the checksum of
  /// RUN/latents/train.npy recorded in FLOW/latents.json). Errors name the directories.
  /// `checkpoint` (best | last | phase_<name>) loads another of RUN's checkpoints instead; a
  /// flow is then refused unless it is the run's model (the flow was fitted on its latents).
  /// Both models go to `device` (cpu | cuda | cuda:N | auto; see evaluation_device).
  /// A run that did not finish (RUN/state.json: killed, failed, stopped, running) is a warning
  /// naming its state and the epoch of the checkpoint used; with `strict` an error.
  static Pae load(const std::string& ae_run, const std::string& flow_run = "", const std::string& checkpoint = "",
                  const std::string& device = "", bool strict = false);
  /// A bundle of models already in memory (tests, library users).
  Pae(std::shared_ptr<models::AutoEncoder> ae, std::shared_ptr<flows::LatentFlow> flow, Config config);

  models::AutoEncoder& ae() { return *ae_; }
  flows::LatentFlow* flow() { return flow_.get(); }
  bool has_flow() const { return flow_ != nullptr; }
  const Config& config() const { return config_; }  ///< the AE run's config
  const std::string& ae_run() const { return ae_run_; }
  const std::string& flow_run() const { return flow_run_; }
  /// The AE checkpoint loaded (best | last | phase_<name>); empty for a bundle made in memory.
  const std::string& checkpoint() const { return checkpoint_; }
  /// Where the models are; inputs may be anywhere, outputs come back on the CPU.
  c10::Device device() const;
  /// [C,H,W] of the AE's input.
  std::vector<int64_t> image_shape() const;

  /// Batched, without gradients, in evaluation mode; inputs on the CPU, outputs on the CPU.
  at::Tensor encode(const at::Tensor& x);       ///< x:[N,C,H,W] -> z:[N,D] float32
  at::Tensor decode(const at::Tensor& z);       ///< z:[N,D] -> x:[N,C,H,W] in [0, 1]
  at::Tensor reconstruct(const at::Tensor& x);  ///< decode(encode(x))
  at::Tensor log_p_z(const at::Tensor& z);      ///< z:[N,D] -> log p(z):[N] float64 (needs a flow)
  /// n latents from the flow at `temperature` (float32), or without a flow from the family's
  /// prior (N(0, I); the AAE's prior; uniform on the NAE's sphere), scaled by `temperature`.
  at::Tensor sample_latents(int64_t n, double temperature = 1.0);
  /// n images: decode(sample_latents(n, temperature)).
  at::Tensor sample(int64_t n, double temperature = 1.0);
  /// n decodes of prior codes (for a plain AE: N(0, I), a prior it never trained for).
  at::Tensor sample_prior(int64_t n);
  /// `steps` images on the straight line between a and b ([C,H,W] each) in the flow's Gaussian
  /// space (in latent space without a flow), endpoints included.
  at::Tensor interpolate(const at::Tensor& a, const at::Tensor& b, int64_t steps);
  /// Per-sample scores, higher = more anomalous, each [N] float64: the model family's own plus
  /// "neg_log_p_z" with a flow.
  std::map<std::string, at::Tensor> scores(const at::Tensor& images, int64_t batch = 500);
  /// A per-pixel residual sigma [C,H,W] (eval/restore.h measures it on held-out images): with it
  /// and a flow, scores() adds "neg_log_p_x" = -(log p(z) + log N(x; decoder(z), sigma^2)), the
  /// data likelihood of the PAE, which catches images the encoder maps into the data's latent
  /// cloud but the decoder cannot produce (noise). `source` says where it came from.
  void set_pixel_sigma(const at::Tensor& sigma, const std::string& source);
  const std::string& pixel_sigma_source() const { return sigma_source_; }

 private:
  std::shared_ptr<models::AutoEncoder> ae_;
  std::shared_ptr<flows::LatentFlow> flow_;
  Config config_;
  std::string ae_run_, flow_run_, checkpoint_;
  at::Tensor sigma_;  ///< per-pixel residual sigma, or undefined
  std::string sigma_source_;
};

/// The device an evaluation runs on: `device` when given (an error where it is not here), else the
/// run's own train.device, or the CPU with a warning where that is a GPU this machine lacks.
c10::Device evaluation_device(const std::string& device, const std::string& run_device, const std::string& ae_run);

/// Refuses a flow fitted on another auto-encoder's latents: dimension, then the checksum of
/// RUN/latents/train.npy recorded in FLOW/latents.json.
void check_flow_matches(const std::string& flow_dir, const std::string& ae_run, int64_t flow_dim, int64_t ae_dim);

}  // namespace pae::eval
