#include "pae/util/image.h"

#include <stb_image_write.h>
#include <torch/torch.h>

#include <fstream>

#include "pae/util/error.h"
#include "pae/util/fs.h"

namespace pae {

std::string encode_png_grid(const at::Tensor& images, int64_t ncol, int64_t* width, int64_t* height) {
  TORCH_CHECK(images.dim() == 4, "save_image_grid: expected [N,C,H,W], got ", images.sizes());
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  TORCH_CHECK(c == 1 || c == 3, "save_image_grid: expected 1 or 3 channels, got ", c);
  TORCH_CHECK(n > 0 && ncol > 0, "save_image_grid: empty batch");
  const int64_t pad = 2;
  const int64_t cols = std::min(ncol, n), rows = (n + cols - 1) / cols;
  const int64_t gh = rows * (h + pad) + pad, gw = cols * (w + pad) + pad;
  auto grid = torch::ones({3, gh, gw}, torch::kFloat);
  auto src = images.detach().to(torch::kCPU, torch::kFloat).clamp(0, 1);
  if (c == 1) src = src.expand({n, 3, h, w});
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i / cols, col = i % cols;
    grid.slice(1, pad + r * (h + pad), pad + r * (h + pad) + h)
        .slice(2, pad + col * (w + pad), pad + col * (w + pad) + w)
        .copy_(src[i]);
  }
  auto bytes = grid.mul(255).round_().to(torch::kUInt8).permute({1, 2, 0}).contiguous();
  std::string png;
  const int ok = stbi_write_png_to_func(
      [](void* context, void* data, int size) {
        static_cast<std::string*>(context)->append(static_cast<char*>(data), size_t(size));
      },
      &png, static_cast<int>(gw), static_cast<int>(gh), 3, bytes.data_ptr<uint8_t>(), static_cast<int>(gw * 3));
  require(ok != 0, "cannot encode a PNG grid");
  if (width) *width = gw;
  if (height) *height = gh;
  return png;
}

void save_image_grid(const at::Tensor& images, int64_t ncol, const std::string& path) {
  const std::string png = encode_png_grid(images, ncol);
  atomic_write(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    out.write(png.data(), std::streamsize(png.size()));
    out.close();
    require(!out.fail(), "cannot write PNG " + path + " (disk full?)");
  });
}

}  // namespace pae
