// The `model` section of a config as typed options (every auto-encoder family reads these).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pae {

/// The `model` section: which auto-encoder and which networks.
struct ModelOptions {
  std::string type = "ae";    ///< registry name: ae, vae, aae, nae; "classifier" = the domain classifier (pae-train)
  std::string arch = "conv";  ///< mlp | conv
  int64_t latent_dim = 32;
  std::vector<int64_t> hidden = {400};            ///< mlp: hidden widths (decoder mirrors)
  std::vector<int64_t> channels = {32, 64, 128};  ///< conv: stride-2 conv widths (decoder mirrors)
  int64_t kernel = 4;                             ///< conv kernel size
  bool batch_norm = true;                         ///< conv: batch normalisation after each hidden conv
  std::string activation = "relu";                ///< relu | leaky_relu | elu | silu
  std::string recon_loss = "mse";                 ///< ae: mse | bce.  vae likelihood: bernoulli (= bce) | gaussian
  double beta = 1.0;                              ///< vae: weight of the KL term
  double sigma = 0.1;                             ///< vae gaussian likelihood: fixed pixel standard deviation
  double dropout = 0.0;                           ///< mlp: dropout after each hidden layer (0 = none)
  // Adversarial auto-encoder (type aae): the prior the encoder's codes are matched to.
  std::string prior = "gaussian";                 ///< aae: gaussian | mixture
  double prior_std = 1.0;                         ///< aae: std of the Gaussian (of each component)
  int64_t prior_components = 10;                  ///< aae mixture: number of components
  std::string prior_layout = "circle";            ///< aae mixture: circle (dims 0, 1) | random centres
  double prior_radius = 4.0;                      ///< aae mixture: circle radius / std of random centres
  bool conditional = false;                       ///< aae: labels (one-hot) go to the discriminator
  std::vector<int64_t> disc_hidden = {256, 256};  ///< aae: discriminator MLP widths
  // Normalized auto-encoder (type nae; Yoon, Noh & Park 2021): phase 1 = train.epochs of AE
  // training (group "ae"), phase 2 = nae_epochs of contrastive training (group "nae").
  int64_t nae_epochs = 50;      ///< nae: epochs of phase 2
  int64_t nae_batches = 0;      ///< nae: batches per phase-2 epoch (0: a full pass over the data)
  double gamma = 1.0;           ///< nae: weight of mean E(x-)^2
  double temperature = 1.0;     ///< nae: T in (E(x+) - E(x-)) / T and in the chains' drift
  double encoder_l2 = 1e-4;     ///< nae: weight of ||theta_enc||^2 (both phases)
  int64_t buffer_size = 10000;  ///< nae: replay buffer of latent chain ends
  double replay_ratio = 0.95;   ///< nae: fraction of latent chains restarted from the buffer
  int64_t z_steps = 10;         ///< nae latent chain (on the sphere): steps, step size, noise
  double z_step_size = 0.2;
  double z_noise = 0.05;
  int64_t x_steps = 50;  ///< nae data-space chain: steps, step size, noise (annealed sigma/(1+t))
  double x_step_size = 10.0;
  double x_noise = 0.05;
  double x_grad_clip = 0.01;  ///< nae: per-sample gradient norm limit of the data-space chain
  /// nae: what x_grad_clip limits: "sample" (each sample's gradient, as the paper states) or "row"
  /// (each image row's, what the authors' code does: its clip takes the norm over the last axis)
  std::string x_grad_clip_per = "sample";
  int64_t chain_groups =
      2;  ///< nae: negatives drawn in this many groups with their own random streams (parallel on the CPU)
};

}  // namespace pae
