// Runs of the PAE's second stage: a flow fitted through the engine on an auto-encoder's latents.
//
// A flow run directory holds config.yml, flow.log, metrics.jsonl, checkpoints/{last,best}.pt,
// latents.json (dimension and checksum of the training latents), log_prob/{split}.npy and
// summary.json, all made from the run's model (train.model_checkpoint, best by default).
#pragma once
#include <c10/core/Device.h>

#include <map>
#include <memory>
#include <string>

#include "pae/config.h"
#include "pae/flows/latent_flow.h"
#include "pae/train/run.h"

namespace pae::train {

/// Where the latents come from.
struct LatentSources {
  std::string train, val, test;  ///< .npy files [N,D]; val and test may be empty
};

/// Latent files of an auto-encoder run directory (RUN/latents/{train,val,test}.npy).
LatentSources latents_of_run(const std::string& ae_run);

struct FlowFitSummary {
  int64_t epochs = 0;
  int64_t model_epoch = 0;  ///< epoch of the run's model
  double samples_per_second = 0;
  std::map<std::string, double> mean_log_prob;         ///< per split, nats per sample
  std::map<std::string, double> gaussian_log_prob;     ///< full-covariance Gaussian baseline
  std::map<std::string, double> typical_set_fraction;  ///< per split: in the prior's 99% typical set
};

/// Fits config.flow on the latents with config.train (epochs, batch, optimizer and schedule,
/// latent_noise_std, patience, dtype) into run_dir; writes log p(z) of each split as .npy.
FlowFitSummary fit_latent_flow(const Config& config, const LatentSources& latents, const RunOptions& options);

/// Loads a fitted flow directory (config.yml + its model checkpoint: `which` = best | last,
/// empty = the run's train.model_checkpoint) onto `device`; errors name the files.
std::shared_ptr<flows::LatentFlow> load_latent_flow(const std::string& flow_dir, Config* config_out = nullptr,
                                                    const std::string& which = "",
                                                    c10::Device device = c10::Device(c10::kCPU),
                                                    int64_t* model_epoch = nullptr);

}  // namespace pae::train
