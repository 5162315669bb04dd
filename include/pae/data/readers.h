// File readers for the image formats our users keep: IDX (MNIST family), CIFAR-10 binary
// batches, folders of images. Each validates what it reads and names the file in its errors.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>

namespace pae::data {

/// Reads an IDX file, gzip-compressed or raw (detected from the content). Returns a CPU tensor
/// of the file's element type (uint8 for images/labels) and shape.
at::Tensor read_idx(const std::string& path);

/// In-memory entry points of the readers (the fuzz targets' way in): `bytes` is a whole file,
/// `source` names it in errors. parse_idx takes raw IDX (gunzip_if_needed first for .gz).
at::Tensor parse_idx(const std::string& bytes, const std::string& source);
std::pair<at::Tensor, at::Tensor> parse_cifar_batch(const std::string& bytes, const std::string& source);

/// `bytes` decompressed when they are gzip (magic 1f 8b; concatenated members too), else as they
/// are; the output is bounded by memory_limit().
std::string gunzip_if_needed(std::string bytes, const std::string& source);

/// Writes a uint8 tensor as a raw or gzip-compressed IDX file (used by tests and tools).
void write_idx(const std::string& path, const at::Tensor& tensor, bool gzip);

/// Reads one CIFAR-10 binary batch: records of 1 label byte + 3072 image bytes.
/// Returns images:[N,3,32,32] uint8 and labels:[N] int64.
std::pair<at::Tensor, at::Tensor> read_cifar_batch(const std::string& path);

/// How images from a folder become tensors.
struct ImageFolderOptions {
  int64_t channels = 3;  ///< 1 (grey) or 3 (RGB)
  int64_t size = 64;     ///< output is size x size: the centred square of the short side, resized
  bool invert = false;   ///< 1 - x, e.g. Omniglot's black strokes on white
};

/// Decodes one image file's bytes (PNG, JPEG, BMP, GIF, TGA) to [C,S,S] float in [0,1], the
/// header's size checked against memory_limit() before decoding.
at::Tensor decode_image(const std::string& bytes, const std::string& source, const ImageFolderOptions& options);

/// Reads every .png/.jpg/.jpeg/.bmp/.gif/.tga under `root` (sorted). Images in sub-folders get
/// the sub-folder's index in sorted order as label; images directly in `root` get label 0.
/// Returns images:[N,C,S,S] float in [0,1] and labels:[N] int64.
std::pair<at::Tensor, at::Tensor> read_image_folder(const std::string& root, const ImageFolderOptions& options);

}  // namespace pae::data
