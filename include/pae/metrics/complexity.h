// Input complexity of images: the length of a lossless compression, the "universal model" against
// which Serrà et al. (ICLR 2020, "Input complexity and out-of-distribution detection with
// likelihood-based generative models") correct a likelihood: S(x) = -log2 p(x) - L(x).
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace pae::metrics {

/// L(x) in bits of each image of x:[N,C,H,W] in [0, 1]: the size of the image's PNG data stream:
/// pixels quantised to 8 bits (C channels interleaved), each row filtered with the PNG filter
/// (none, sub, up, average, Paeth) of smallest sum of absolute values (libpng's heuristic), the
/// whole deflated by zlib at level 9 (PNG's headers, the same for every image, are left out).
std::vector<double> png_complexity_bits(const at::Tensor& x);

}  // namespace pae::metrics
