// The `flow` section of a config as typed options: flat, one flow.
#pragma once
#include <cstdint>
#include <string>

#include "pae/flows/spline.h"
#include "pae/util/options.h"

namespace pae::flows {

/// Flat options of one flow (the config's `flow` section maps onto them).
struct FlowOptions {
  std::string type = "nsf";         ///< nsf | realnvp: the coupling used in every layer
  int64_t layers = 8;               ///< coupling layers
  int64_t hidden = 256;             ///< conditioner width
  int64_t hidden_layers = 2;        ///< conditioner depth (hidden layers, or residual blocks)
  std::string conditioner = "mlp";  ///< mlp | resnet
  int64_t bins = 8;                 ///< spline bins
  double tail_bound = 3.0;
  double min_bin_width = kMinBinWidth, min_bin_height = kMinBinHeight, min_derivative = kMinDerivative;
  std::string permutation = "lu";  ///< between couplings: reverse | random | lu
  bool actnorm = false;            ///< ActNorm before each coupling
  bool batch_norm = false;         ///< batch normalisation before each coupling
  /// linear: the data enter the couplings as they are; asinh: through a learned element-wise
  /// asinh compression first (heavy-tailed data)
  std::string tails = "linear";
  double dropout = 0.0;  ///< dropout in the conditioners' hidden layers (training only)
  /// From this fraction of the training epochs on, the dropout falls linearly to 0 at the last
  /// epoch (1: constant). Dropout blurs structure thinner than its noise (a dimension of std
  /// 1e-3); switching it off at the end of the schedule lets the flow resolve it.
  double dropout_anneal = 1.0;
  uint64_t seed = 0;  ///< fixed random permutations

  /// Every key of the `flow` section.
  void visit(OptionVisitor& v);
};

}  // namespace pae::flows
