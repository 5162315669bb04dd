#include "pae/models/nets.h"

#include <torch/torch.h>

#include "pae/nn/conv.h"
#include "pae/nn/dense.h"
#include "pae/util/error.h"

namespace pae::models {

using pae::nn::Dense;

namespace nn = torch::nn;

std::string ImageShape::str() const {
  return "[" + std::to_string(channels) + "," + std::to_string(height) + "," + std::to_string(width) + "]";
}

namespace {

void push_activation(nn::Sequential& seq, const std::string& name) {
  if (name == "relu")
    seq->push_back(nn::ReLU());
  else if (name == "leaky_relu")
    seq->push_back(nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(0.2)));
  else if (name == "elu")
    seq->push_back(nn::ELU());
  else if (name == "silu")
    seq->push_back(nn::SiLU());
  else
    throw Error("model.activation '" + name + "': expected relu, leaky_relu, elu or silu");
}

int64_t conv_pad(int64_t k) { return (k - 1) / 2; }
int64_t conv_out(int64_t in, int64_t k) { return (in + 2 * conv_pad(k) - k) / 2 + 1; }

/// Spatial sizes after each stride-2 conv: sizes[0] is the input size.
std::vector<int64_t> conv_sizes(int64_t in, const ModelOptions& o) {
  std::vector<int64_t> sizes{in};
  for (size_t i = 0; i < o.channels.size(); ++i) {
    const int64_t next = conv_out(sizes.back(), o.kernel);
    // A stride-2 conv must halve what it is given: a 1-pixel map (or one it would empty) cannot be.
    require(sizes.back() >= 2 && next >= 1,
            "model.channels: " + std::to_string(o.channels.size()) + " stride-2 convs are more than a " +
                std::to_string(in) + "-pixel image can take: " + std::to_string(i) + " leave it " +
                std::to_string(sizes.back()) + " pixel(s) wide, which conv " + std::to_string(i + 1) +
                " cannot halve (kernel " + std::to_string(o.kernel) + "); use at most " + std::to_string(i) +
                " channel entries");
    sizes.push_back(next);
  }
  return sizes;
}

}  // namespace

nn::Sequential make_mlp(int64_t in, const std::vector<int64_t>& hidden, int64_t out, const std::string& activation,
                        double dropout) {
  nn::Sequential seq;
  for (auto h : hidden) {
    seq->push_back(Dense(in, h));
    push_activation(seq, activation);
    if (dropout > 0) seq->push_back(nn::Dropout(dropout));
    in = h;
  }
  seq->push_back(Dense(in, out));
  return seq;
}

nn::Sequential make_encoder(const ModelOptions& o, const ImageShape& s, int64_t out_dim) {
  nn::Sequential seq;
  if (o.arch == "mlp") {
    seq->push_back(nn::Flatten());
    int64_t in = s.numel();
    for (auto h : o.hidden) {
      seq->push_back(Dense(in, h));
      push_activation(seq, o.activation);
      if (o.dropout > 0) seq->push_back(nn::Dropout(o.dropout));
      in = h;
    }
    seq->push_back(Dense(in, out_dim));
    return seq;
  }
  require(o.arch == "conv", "model.arch '" + o.arch + "': expected mlp or conv");
  const auto hs = conv_sizes(s.height, o), ws = conv_sizes(s.width, o);
  int64_t in = s.channels;
  for (auto ch : o.channels) {
    seq->push_back(
        nn::Conv2d(nn::Conv2dOptions(in, ch, o.kernel).stride(2).padding(conv_pad(o.kernel)).bias(!o.batch_norm)));
    if (o.batch_norm) seq->push_back(nn::BatchNorm2d(ch));
    push_activation(seq, o.activation);
    in = ch;
  }
  seq->push_back(nn::Flatten());
  seq->push_back(Dense(in * hs.back() * ws.back(), out_dim));
  return seq;
}

nn::Sequential make_decoder(const ModelOptions& o, const ImageShape& s, int64_t in_dim) {
  nn::Sequential seq;
  if (o.arch == "mlp") {
    int64_t in = in_dim;
    for (auto it = o.hidden.rbegin(); it != o.hidden.rend(); ++it) {
      seq->push_back(Dense(in, *it));
      push_activation(seq, o.activation);
      if (o.dropout > 0) seq->push_back(nn::Dropout(o.dropout));
      in = *it;
    }
    seq->push_back(Dense(in, s.numel()));
    seq->push_back(nn::Unflatten(nn::UnflattenOptions(1, s.sizes())));
    return seq;
  }
  require(o.arch == "conv", "model.arch '" + o.arch + "': expected mlp or conv");
  const auto hs = conv_sizes(s.height, o), ws = conv_sizes(s.width, o);
  const size_t n = o.channels.size();
  seq->push_back(Dense(in_dim, o.channels.back() * hs.back() * ws.back()));
  push_activation(seq, o.activation);
  seq->push_back(nn::Unflatten(nn::UnflattenOptions(1, {o.channels.back(), hs.back(), ws.back()})));
  for (size_t i = n; i-- > 0;) {
    const int64_t in = o.channels[i];
    const int64_t out = i == 0 ? s.channels : o.channels[i - 1];
    const int64_t p = conv_pad(o.kernel);
    // Transposed conv size: (in-1)*2 - 2p + k + output_padding; pick the padding that lands
    // exactly on the encoder's size at this depth.
    const int64_t oph = hs[i] - ((hs[i + 1] - 1) * 2 - 2 * p + o.kernel);
    const int64_t opw = ws[i] - ((ws[i + 1] - 1) * 2 - 2 * p + o.kernel);
    require(oph >= 0 && oph < 2 && opw >= 0 && opw < 2,
            "model.kernel " + std::to_string(o.kernel) + " cannot mirror the encoder for image " + s.str());
    const bool last = i == 0;
    seq->push_back(pae::nn::ConvTranspose2d(nn::ConvTranspose2dOptions(in, out, o.kernel)
                                                .stride(2)
                                                .padding(p)
                                                .output_padding(torch::ExpandingArray<2>({oph, opw}))
                                                .bias(last || !o.batch_norm)));
    if (!last) {
      if (o.batch_norm) seq->push_back(nn::BatchNorm2d(out));
      push_activation(seq, o.activation);
    }
  }
  return seq;
}

ImageShape known_image_shape(const data::DataOptions& d) {
  if (d.name == "fashion-mnist" || d.name == "mnist") return {1, 28, 28};
  if (d.name == "cifar10") return {3, 32, 32};
  if (d.name == "thin-spiral") return {1, 1, 2};  // points in the plane
  if (d.name == "noise" || d.name == "constant" || d.name == "constant-gray")
    return {d.channels > 0 ? d.channels : 1, d.image_size > 0 ? d.image_size : 28,
            d.image_size > 0 ? d.image_size : 28};
  if (d.name == "image-folder")
    return {d.channels > 0 ? d.channels : 3, d.image_size > 0 ? d.image_size : 64,
            d.image_size > 0 ? d.image_size : 64};
  return {0, 0, 0};
}

}  // namespace pae::models
