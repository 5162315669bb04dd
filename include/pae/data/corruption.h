// Corruptions of images for posterior inference (inpainting, denoising): solid masks, random
// pixels, a user's PNG mask, additive Gaussian noise. Each is seeded and described by its spec
// string, so a report that records both can be reproduced.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace pae::data {

/// A parsed corruption spec:
///   left | right | top | bottom      half of the columns / rows missing
///   columns:A-B                      columns A..B (inclusive, 0-based) missing
///   center:S                         an S x S square in the centre missing
///   random:F                         each pixel missing with probability F (per image, seeded)
///   png:PATH                         a user's mask, the AE's height x width: white (>= 0.5) missing
///   noise:SIGMA[:noclip]             x + SIGMA N(0, 1) on every pixel, clipped to [0, 1] unless noclip
struct Corruption {
  std::string spec;  ///< as given
  std::string kind;  ///< left, right, top, bottom, columns, center, random, png, noise
  int64_t a = 0, b = 0;
  double fraction = 0, sigma = 0;
  bool clip = true;
  std::string path;
  bool is_noise() const { return kind == "noise"; }
};

/// Parses `spec` for images of shape [C,H,W]; errors name the spec and what was expected.
Corruption parse_corruption(const std::string& spec, const std::vector<int64_t>& image_shape);

/// The corrupted images and which pixels are observed.
struct Corrupted {
  at::Tensor x;         ///< [N,C,H,W]: missing pixels set to 0, noisy pixels as observed
  at::Tensor observed;  ///< [N,C,H,W] bool: true where the pixel is observed
};

/// Applies c to x:[N,C,H,W] in [0, 1] (CPU); `seed` drives random masks and noise.
Corrupted corrupt(const Corruption& c, const at::Tensor& x, uint64_t seed);

}  // namespace pae::data
