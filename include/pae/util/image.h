// Image output: PNG grids of image batches (stb_image_write).
#pragma once
#include <cstdint>
#include <string>

namespace at {
class Tensor;
}

namespace pae {

/// images:[N,C,H,W] float in [0,1] (C = 1 or 3) -> a PNG grid with `ncol` columns and a
/// 2-pixel border, written atomically to `path`.
void save_image_grid(const at::Tensor& images, int64_t ncol, const std::string& path);

/// The same grid as PNG bytes; `width`/`height` (optional) receive its size in pixels.
std::string encode_png_grid(const at::Tensor& images, int64_t ncol, int64_t* width = nullptr,
                            int64_t* height = nullptr);

}  // namespace pae
