// The `model` section of a config as typed options (every auto-encoder family reads these).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pae {

/// The `model` section: which auto-encoder and which networks.
struct ModelOptions {
  std::string type = "ae";    ///< registry name: ae, vae; "classifier" = the domain classifier (pae-train)
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
};

}  // namespace pae
