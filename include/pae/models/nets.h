// Encoder and decoder networks: MLP and DCGAN-style convolutional, chosen by ModelOptions.arch.
#pragma once
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <string>
#include <vector>

#include "pae/data/dataset.h"
#include "pae/models/options.h"

namespace pae::models {

/// Shape of one image, [C,H,W].
struct ImageShape {
  int64_t channels = 1, height = 28, width = 28;
  int64_t numel() const { return channels * height * width; }
  std::vector<int64_t> sizes() const { return {channels, height, width}; }
  std::string str() const;
};

/// x:[B,in] -> [B,out]: Dense layers of the `hidden` widths, each followed by the activation
/// (and dropout when > 0), then a linear output layer.
torch::nn::Sequential make_mlp(int64_t in, const std::vector<int64_t>& hidden, int64_t out,
                               const std::string& activation, double dropout = 0);

/// x:[B,C,H,W] -> h:[B,out_dim]. MLP: flatten then hidden layers. Conv: stride-2 convs of
/// options.channels widths (batch norm optional), then a linear layer.
torch::nn::Sequential make_encoder(const ModelOptions& options, const ImageShape& shape, int64_t out_dim);

/// z:[B,in_dim] -> logits:[B,C,H,W] (pre-sigmoid). Mirrors make_encoder; transposed convs are
/// padded so that every intermediate size matches the encoder's exactly.
torch::nn::Sequential make_decoder(const ModelOptions& options, const ImageShape& shape, int64_t in_dim);

/// The image shape a dataset will have, when known without loading it (else nullopt-like:
/// channels = 0).
ImageShape known_image_shape(const data::DataOptions& options);

}  // namespace pae::models
