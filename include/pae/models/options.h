// The `model` section of a config as typed options: the keys every auto-encoder family shares,
// plus the options of the chosen family (each family's struct lives in its own file and is
// registered with it, so that a new family is one file and one registration line).
#pragma once
#include <any>
#include <cstdint>
#include <string>
#include <typeinfo>
#include <vector>

#include "pae/util/error.h"
#include "pae/util/options.h"

namespace pae {

/// The `model` section.
struct ModelOptions {
  std::string type = "ae";  ///< registry name (ae, vae, aae, nae, dnf); "classifier" = the domain classifier
  int64_t latent_dim = 32;
  // The encoder and decoder networks (families with networks: see ModelFamily::uses_networks).
  std::string arch = "conv";                      ///< mlp | conv
  std::vector<int64_t> hidden = {400};            ///< mlp: hidden widths (decoder mirrors)
  std::vector<int64_t> channels = {32, 64, 128};  ///< conv: stride-2 conv widths (decoder mirrors)
  int64_t kernel = 4;                             ///< conv kernel size
  bool batch_norm = true;                         ///< conv: batch normalisation after each hidden conv
  std::string activation = "relu";                ///< relu | leaky_relu | elu | silu
  std::string recon_loss = "mse";                 ///< ae: mse | bce.  vae likelihood: bernoulli (= bce) | gaussian
  double dropout = 0.0;                           ///< mlp: dropout after each hidden layer (0 = none)

  /// The chosen family's own options (a VaeOptions for type vae, ...): defaults when none were
  /// set. Asking for another family's struct than the one held is an error.
  template <class T>
  const T& family() const {
    static const T defaults;
    if (!family_.has_value()) return defaults;
    const T* held = std::any_cast<T>(&family_);
    require(held != nullptr, "model options of type '" + type + "' hold another family's options");
    return *held;
  }
  /// The same, to set: replaces options of another family with T's defaults.
  template <class T>
  T& family() {
    if (std::any_cast<T>(&family_) == nullptr) family_ = T{};
    return *std::any_cast<T>(&family_);
  }

  /// Every key of the section: type, latent_dim, the network keys, then the family's own.
  void visit(OptionVisitor& v);

 private:
  std::any family_;
};

}  // namespace pae
