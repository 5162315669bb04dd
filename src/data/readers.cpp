#include "pae/data/readers.h"

#include <stb_image.h>
#include <stb_image_resize.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <vector>

#include "pae/util/error.h"
#include "pae/util/fs.h"

namespace pae::data {

namespace {

/// The whole file, decompressed when it is gzip (detected from the magic bytes).
std::string read_maybe_gzip(const std::string& path) {
  require(fs::exists(path), "file not found: " + path);
  return gunzip_if_needed(read_text(path), path);
}

uint32_t be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

}  // namespace

std::string gunzip_if_needed(std::string bytes, const std::string& source) {
  if (bytes.size() < 2 || static_cast<unsigned char>(bytes[0]) != 0x1f || static_cast<unsigned char>(bytes[1]) != 0x8b)
    return bytes;
  std::string out;
  z_stream z{};
  require(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, source + ": cannot start gzip decompression");
  z.next_in = reinterpret_cast<Bytef*>(bytes.data());
  z.avail_in = static_cast<uInt>(std::min<size_t>(bytes.size(), std::numeric_limits<uInt>::max()));
  std::vector<char> buf(1 << 20);
  int rc = Z_OK;
  while (true) {
    z.next_out = reinterpret_cast<Bytef*>(buf.data());
    z.avail_out = static_cast<uInt>(buf.size());
    rc = inflate(&z, Z_NO_FLUSH);
    const size_t produced = buf.size() - z.avail_out;
    if (out.size() + produced > memory_limit()) {
      inflateEnd(&z);
      require_memory(out.size() + produced, source + " (decompressed)");
    }
    out.append(buf.data(), produced);
    if (rc == Z_STREAM_END) {
      // Concatenated gzip members decompress one after another, as gzip(1) does.
      if (z.avail_in == 0) break;
      if (inflateReset(&z) != Z_OK) break;
      continue;
    }
    if (rc != Z_OK) break;
    if (z.avail_in == 0 && produced == 0) break;  // the stream is cut short
  }
  const std::string msg = z.msg ? z.msg : rc == Z_STREAM_END ? "" : "unexpected end of data";
  inflateEnd(&z);
  require(rc == Z_STREAM_END, source + ": corrupted or truncated gzip data (" + msg + ")");
  return out;
}

at::Tensor read_idx(const std::string& path) { return parse_idx(read_maybe_gzip(path), path); }

at::Tensor parse_idx(const std::string& bytes, const std::string& path) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  require(bytes.size() >= 4 && p[0] == 0 && p[1] == 0,
          path + ": not an IDX file (bad magic; expected 0x0000 then type and rank)");
  const int type = p[2], rank = p[3];
  torch::Dtype dtype;
  size_t elem = 0;
  switch (type) {
    case 0x08:
      dtype = torch::kUInt8;
      elem = 1;
      break;
    case 0x09:
      dtype = torch::kInt8;
      elem = 1;
      break;
    case 0x0B:
      dtype = torch::kInt16;
      elem = 2;
      break;
    case 0x0C:
      dtype = torch::kInt32;
      elem = 4;
      break;
    case 0x0D:
      dtype = torch::kFloat32;
      elem = 4;
      break;
    case 0x0E:
      dtype = torch::kFloat64;
      elem = 8;
      break;
    default:
      throw Error(path + ": not an IDX file (unknown element type 0x" + std::to_string(type) + ")");
  }
  require(rank >= 1 && rank <= 4, path + ": not an IDX file (rank " + std::to_string(rank) + ")");
  require(bytes.size() >= 4 + 4 * size_t(rank), path + ": truncated IDX header");
  std::vector<int64_t> shape;
  uint64_t numel = 1;
  for (int i = 0; i < rank; ++i) {
    shape.push_back(be32(p + 4 + 4 * i));
    numel = checked_product(numel, uint64_t(shape.back()), path + ": IDX header");
  }
  const size_t offset = 4 + 4 * size_t(rank);
  const size_t expected = offset + checked_product(numel, elem, path + ": IDX header");
  require(bytes.size() == expected, path + ": truncated or oversized IDX data: header promises " +
                                        std::to_string(expected) + " bytes, file has " + std::to_string(bytes.size()));
  auto t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  if (numel == 0) return t;
  std::memcpy(t.data_ptr(), p + offset, size_t(numel) * elem);
  if (elem > 1) {  // IDX is big-endian
    auto* d = static_cast<unsigned char*>(t.data_ptr());
    for (size_t i = 0; i < numel; ++i) std::reverse(d + i * elem, d + (i + 1) * elem);
  }
  return t;
}

void write_idx(const std::string& path, const at::Tensor& tensor, bool gzip) {
  TORCH_CHECK(tensor.scalar_type() == torch::kUInt8, "write_idx: uint8 only");
  auto t = tensor.contiguous().cpu();
  std::string bytes = {0, 0, 0x08, static_cast<char>(t.dim())};
  for (int64_t i = 0; i < t.dim(); ++i) {
    const auto d = static_cast<uint32_t>(t.size(i));
    bytes += {static_cast<char>(d >> 24), static_cast<char>(d >> 16), static_cast<char>(d >> 8), static_cast<char>(d)};
  }
  bytes.append(static_cast<const char*>(t.data_ptr()), size_t(t.numel()));
  atomic_write(path, [&](const fs::path& tmp) {
    if (gzip) {
      gzFile f = gzopen(tmp.c_str(), "wb");
      require(f != nullptr, "cannot write " + tmp.string());
      const int n = gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
      gzclose(f);
      require(n == static_cast<int>(bytes.size()), "failed writing " + tmp.string());
    } else {
      std::ofstream(tmp, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    }
  });
}

std::pair<at::Tensor, at::Tensor> read_cifar_batch(const std::string& path) {
  return parse_cifar_batch(read_maybe_gzip(path), path);
}

std::pair<at::Tensor, at::Tensor> parse_cifar_batch(const std::string& bytes, const std::string& path) {
  constexpr size_t kRecord = 1 + 3 * 32 * 32;
  require(!bytes.empty() && bytes.size() % kRecord == 0, path + ": not a CIFAR-10 binary batch (size " +
                                                             std::to_string(bytes.size()) +
                                                             " is not a multiple of 3073-byte records)");
  const int64_t n = int64_t(bytes.size() / kRecord);
  auto raw = torch::from_blob(const_cast<char*>(bytes.data()), {n, int64_t(kRecord)}, torch::kUInt8);
  auto labels = raw.select(1, 0).to(torch::kInt64);
  require(labels.max().item<int64_t>() <= 9, path + ": label byte above 9: not a CIFAR-10 batch");
  auto images = raw.slice(1, 1).reshape({n, 3, 32, 32}).clone();
  return {images, labels};
}

at::Tensor decode_image(const std::string& bytes, const std::string& source, const ImageFolderOptions& options) {
  require(options.channels == 1 || options.channels == 3,
          "image: channels must be 1 or 3, got " + std::to_string(options.channels));
  require(options.size > 0 && options.size <= 65536, "image: size must be in 1..65536");
  require(bytes.size() <= size_t(std::numeric_limits<int>::max()), source + ": image file too large");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());
  const int c = int(options.channels), s = int(options.size);
  int w = 0, h = 0, n = 0;
  const auto reason = [] {
    return std::string(stbi_failure_reason() ? stbi_failure_reason()
                                             : "not a PNG, JPEG, BMP, GIF or TGA image stb_image reads, or corrupt");
  };
  // The header's size first: a corrupt one must not make the decoder allocate gigabytes.
  require(stbi_info_from_memory(data, len, &w, &h, &n) != 0, source + ": cannot decode image (" + reason() + ")");
  require(w > 0 && h > 0, source + ": image has no pixels");
  // No image format packs more than a few thousand pixels into a byte (deflate's limit is ~1032:1,
  // LZW's ~2700:1): a header that claims more describes a truncated or corrupt file, whose
  // decoding would still fill (and resize) every claimed pixel.
  require(uint64_t(w) * uint64_t(h) <= 4096 * uint64_t(bytes.size()) + (uint64_t(1) << 20),
          source + ": the header claims " + std::to_string(w) + "x" + std::to_string(h) + " pixels, more than its " +
              std::to_string(bytes.size()) + " bytes can hold (truncated or corrupt)");
  require_memory(checked_product(checked_product(uint64_t(w), uint64_t(h), source), 4, source), source);
  unsigned char* px = stbi_load_from_memory(data, len, &w, &h, &n, c);
  require(px != nullptr, source + ": cannot decode image (" + reason() + ")");
  // The centred square of the short side, resized to s x s (the resize reads it in place).
  const int side = std::min(w, h), x0 = (w - side) / 2, y0 = (h - side) / 2;
  std::vector<unsigned char> resized(size_t(s) * size_t(s) * size_t(c));
  const int ok = stbir_resize_uint8(px + (size_t(y0) * size_t(w) + size_t(x0)) * size_t(c), side, side, w * c,
                                    resized.data(), s, s, 0, c);
  stbi_image_free(px);
  require(ok != 0, source + ": resize failed");
  auto t = torch::from_blob(resized.data(), {s, s, c}, torch::kUInt8).permute({2, 0, 1}).to(torch::kFloat).div(255.0);
  return options.invert ? 1 - t : t;
}

std::pair<at::Tensor, at::Tensor> read_image_folder(const std::string& root, const ImageFolderOptions& options) {
  require(fs::is_directory(root), "image folder not found: " + root);
  require(options.channels == 1 || options.channels == 3,
          "image folder: channels must be 1 or 3, got " + std::to_string(options.channels));
  require(options.size > 0, "image folder: size must be positive");
  static const std::vector<std::string> kExt = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga"};
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    std::string ext = entry.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (std::find(kExt.begin(), kExt.end(), ext) != kExt.end()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  require(!files.empty(), "image folder " + root + " holds no .png/.jpg/.bmp/.gif/.tga images");
  std::map<std::string, int64_t> classes;
  for (const auto& f : files) {
    const auto rel = fs::relative(f.parent_path(), root).string();
    if (rel != "." && !classes.count(rel)) classes.emplace(rel, 0);
  }
  int64_t next = 0;
  for (auto& kv : classes) kv.second = next++;

  const int64_t c = options.channels, s = options.size;
  require_memory(checked_product(files.size(), uint64_t(c * s * s) * sizeof(float), root), "image folder " + root);
  auto images = torch::empty({int64_t(files.size()), c, s, s}, torch::kFloat);
  auto labels = torch::zeros({int64_t(files.size())}, torch::kInt64);
  for (size_t i = 0; i < files.size(); ++i) {
    images[int64_t(i)].copy_(decode_image(read_text(files[i]), files[i].string(), options));
    const auto rel = fs::relative(files[i].parent_path(), root).string();
    if (rel != ".") labels[int64_t(i)] = classes.at(rel);
  }
  return {images, labels};
}

}  // namespace pae::data
