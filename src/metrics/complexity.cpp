#include "pae/metrics/complexity.h"

#include <torch/torch.h>
#include <zlib.h>

#include <cstdlib>

#include "pae/util/error.h"

namespace pae::metrics {

namespace {

uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return uint8_t(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

/// Appends row `cur` filtered with PNG filter `type` (prev: the row above, zeros for the first;
/// bpp: bytes per pixel) to `out`, the filter type byte first; returns the sum of |filtered| as signed bytes.
long filter_row(int type, const uint8_t* cur, const uint8_t* prev, size_t n, size_t bpp, std::vector<uint8_t>& out) {
  out.push_back(uint8_t(type));
  long cost = 0;
  for (size_t i = 0; i < n; ++i) {
    const int a = i >= bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
    const int predicted = type == 0 ? 0 : type == 1 ? a : type == 2 ? b : type == 3 ? (a + b) / 2 : paeth(a, b, c);
    const auto f = uint8_t(cur[i] - predicted);
    out.push_back(f);
    cost += std::abs(int(int8_t(f)));
  }
  return cost;
}

}  // namespace

std::vector<double> png_complexity_bits(const at::Tensor& x) {
  require(x.dim() == 4, "png_complexity_bits: expected images [N,C,H,W]");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  // [N,H,W,C] bytes: PNG's sample order.
  const auto bytes = x.detach()
                         .to(torch::kCPU, torch::kFloat)
                         .clamp(0, 1)
                         .mul(255)
                         .round()
                         .to(torch::kUInt8)
                         .permute({0, 2, 3, 1})
                         .contiguous();
  const size_t row = size_t(w * c), bpp = size_t(c);
  const std::vector<uint8_t> zeros(row, 0);
  std::vector<double> bits(static_cast<size_t>(n));
  std::vector<uint8_t> stream, best, trial;
  std::vector<uint8_t> packed(compressBound(uLong((row + 1) * size_t(h))));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* image = bytes.data_ptr<uint8_t>() + size_t(i) * row * size_t(h);
    stream.clear();
    for (int64_t y = 0; y < h; ++y) {
      const uint8_t* cur = image + size_t(y) * row;
      const uint8_t* prev = y == 0 ? zeros.data() : cur - row;
      long best_cost = -1;
      for (int type = 0; type < 5; ++type) {
        trial.clear();
        const long cost = filter_row(type, cur, prev, row, bpp, trial);
        if (best_cost < 0 || cost < best_cost) best_cost = cost, best.swap(trial);
      }
      stream.insert(stream.end(), best.begin(), best.end());
    }
    uLongf size = uLongf(packed.size());
    require(compress2(packed.data(), &size, stream.data(), uLong(stream.size()), 9) == Z_OK,
            "png_complexity_bits: zlib failed");
    bits[size_t(i)] = 8.0 * double(size);
  }
  return bits;
}

}  // namespace pae::metrics
