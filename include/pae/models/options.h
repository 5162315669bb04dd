// The `model` section of a config as typed options (every auto-encoder family reads these).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pae {

/// The `model` section: which auto-encoder and which networks.
struct ModelOptions {
  std::string type = "ae";    ///< registry name: ae, vae, aae; "classifier" = the domain classifier (pae-train)
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
};

}  // namespace pae
