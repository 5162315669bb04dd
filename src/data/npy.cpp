#include "pae/data/npy.h"

#include <torch/torch.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "pae/util/error.h"
#include "pae/util/fs.h"

namespace pae::data {

namespace {

struct DtypeCode {
  const char* descr;
  torch::Dtype dtype;
  size_t size;
};

const DtypeCode kCodes[] = {
    {"<f4", torch::kFloat32, 4}, {"<f8", torch::kFloat64, 8}, {"|u1", torch::kUInt8, 1},
    {"<i4", torch::kInt32, 4},   {"<i8", torch::kInt64, 8},   {"|b1", torch::kBool, 1},
};

const DtypeCode* find_descr(const std::string& d) {
  for (const auto& c : kCodes)
    if (d == c.descr) return &c;
  // Accept the single-byte types with '<' or '=' as some writers produce them.
  if (d == "<u1" || d == "=u1") return &kCodes[2];
  if (d == "<b1" || d == "=b1") return &kCodes[5];
  return nullptr;
}

const DtypeCode* find_dtype(torch::Dtype t) {
  for (const auto& c : kCodes)
    if (t == c.dtype) return &c;
  return nullptr;
}

struct NpyHeader {
  std::vector<int64_t> shape;
  const DtypeCode* code;
  size_t offset;        ///< where the data starts
  uint64_t data_bytes;  ///< what the shape and dtype make
};

/// The header of an .npy file whose first bytes are `bytes` (at least its header, when the file
/// has one) and whose size is `file_size`: checked against the file size and the memory limit.
NpyHeader parse_header(const std::string& bytes, uint64_t file_size, const std::string& path) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  require(bytes.size() >= 10 && std::memcmp(p, "\x93NUMPY", 6) == 0,
          path + ": not an .npy file (bad magic; expected \\x93NUMPY)");
  const int major = p[6];
  require(major >= 1 && major <= 3, path + ": unsupported .npy version " + std::to_string(major));
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = p[8] | (p[9] << 8);
    offset = 10;
  } else {
    require(bytes.size() >= 12, path + ": truncated .npy header");
    header_len = p[8] | (p[9] << 8) | (p[10] << 16) | (static_cast<uint32_t>(p[11]) << 24);
    offset = 12;
  }
  require(header_len <= 65536, path + ": .npy header of " + std::to_string(header_len) +
                                   " bytes (at most 65536 expected: a corrupt header?)");
  require(bytes.size() - offset >= header_len, path + ": truncated .npy header");
  const std::string header = bytes.substr(offset, header_len);
  offset += header_len;

  std::smatch m;
  static const std::regex descr_re("'descr'\\s*:\\s*'([^']*)'");
  static const std::regex fortran_re("'fortran_order'\\s*:\\s*(True|False)");
  static const std::regex shape_re("'shape'\\s*:\\s*\\(([^)]*)\\)");
  require(std::regex_search(header, m, descr_re), path + ": .npy header has no 'descr'");
  const std::string descr = m[1].str();
  const DtypeCode* code = find_descr(descr);
  require(code != nullptr, path + ": unsupported dtype '" + descr +
                               "' (expected float32, float64, uint8, int32, int64 or bool, "
                               "little-endian)");
  require(std::regex_search(header, m, fortran_re), path + ": .npy header has no 'fortran_order'");
  require(m[1].str() == "False", path +
                                     ": Fortran-order arrays are not supported; save with "
                                     "np.ascontiguousarray");
  require(std::regex_search(header, m, shape_re), path + ": .npy header has no 'shape'");
  std::vector<int64_t> shape;
  const std::string dims = m[1].str();
  std::stringstream entries(dims);
  static const std::regex dim_re("\\s*([0-9]{1,18})\\s*");
  uint64_t numel = 1;
  bool overflow = false;
  for (std::string entry; std::getline(entries, entry, ',');) {
    const auto first = entry.find_first_not_of(" \t");
    if (first == std::string::npos) continue;  // "(3,)": the trailing comma
    entry = entry.substr(first, entry.find_last_not_of(" \t") - first + 1);
    std::smatch dm;
    require(std::regex_match(entry, dm, dim_re),
            path + ": .npy shape (" + dims + "): '" + entry + "' is not a dimension (an integer >= 0)");
    const uint64_t d = std::stoull(dm[1].str());
    shape.push_back(int64_t(d));
    overflow = overflow || (d != 0 && numel > (uint64_t(1) << 62) / d);
    numel *= d;
  }
  require(shape.size() <= 16, path + ": .npy shape (" + dims + ") has more than 16 dimensions");
  // The header's claim against the bytes the file holds, before anything is allocated.
  const uint64_t left = file_size - offset;
  require(!overflow && numel * code->size <= left,
          path + ": the .npy header claims shape (" + dims + "), " +
              (overflow ? std::string("too many elements") : std::to_string(numel * code->size) + " bytes") +
              ", but the file holds " + std::to_string(left) + " data bytes (truncated or a corrupt header)");
  require_memory(numel * code->size, path);
  return {shape, code, offset, numel * code->size};
}

/// Bytes other than 0/1 are not booleans.
void check_bools(const at::Tensor& t, const std::string& path) {
  if (t.scalar_type() == torch::kBool)
    require(t.view(torch::kUInt8).le(1).all().item<bool>(), path + ": bool array holds bytes other than 0 and 1");
}

}  // namespace

at::Tensor read_npy(const std::string& path) {
  require(fs::is_regular_file(path),
          "cannot open " + path + ": " + (fs::exists(path) ? "not a regular file" : "No such file or directory"));
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), "cannot open " + path + ": " + std::strerror(errno));
  const uint64_t size = fs::file_size(path);
  // The header only (at most 12 + 65536 bytes), then the data straight into the tensor.
  std::string prefix(size_t(std::min<uint64_t>(size, 12 + 65536)), '\0');
  in.read(prefix.data(), std::streamsize(prefix.size()));
  const NpyHeader h = parse_header(prefix, size, path);
  auto tensor = torch::empty(h.shape, torch::TensorOptions().dtype(h.code->dtype));
  in.clear();
  in.seekg(std::streamoff(h.offset));
  in.read(static_cast<char*>(tensor.data_ptr()), std::streamsize(h.data_bytes));
  require(static_cast<uint64_t>(in.gcount()) == h.data_bytes,
          path + ": truncated: expected " + std::to_string(h.data_bytes) + " data bytes");
  check_bools(tensor, path);
  return tensor;
}

at::Tensor parse_npy(const std::string& bytes, const std::string& path) {
  const NpyHeader h = parse_header(bytes, bytes.size(), path);
  auto tensor = torch::empty(h.shape, torch::TensorOptions().dtype(h.code->dtype));
  if (h.data_bytes > 0) std::memcpy(tensor.data_ptr(), bytes.data() + h.offset, h.data_bytes);
  check_bools(tensor, path);
  return tensor;
}

void write_npy(const std::string& path, const at::Tensor& tensor) {
  const DtypeCode* code = find_dtype(tensor.scalar_type());
  TORCH_CHECK(code != nullptr, "write_npy: unsupported dtype ", tensor.scalar_type());
  auto t = tensor.detach().to(torch::kCPU).contiguous();
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i)
    shape += std::to_string(t.size(i)) + (t.dim() == 1 ? "," : i + 1 < t.dim() ? ", " : "");
  shape += ")";
  std::string header =
      std::string("{'descr': '") + code->descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so that magic + len + header is a multiple of 64 bytes, ending in '\n'.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  atomic_write(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    require(static_cast<bool>(out), "cannot write " + tmp.string());
    out.write("\x93NUMPY\x01\x00", 8);
    const uint16_t len = static_cast<uint16_t>(header.size());
    const char lb[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
    out.write(lb, 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * code->size));
    out.close();
    require(!out.fail(),
            "cannot write " + path + " (disk full, or over a file-size limit?): " + std::strerror(errno ? errno : EIO));
  });
}

}  // namespace pae::data
