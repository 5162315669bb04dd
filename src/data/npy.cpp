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

}  // namespace

at::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), "cannot open " + path + ": " + std::strerror(errno));
  char magic[8];
  in.read(magic, 8);
  require(in.gcount() == 8 && std::memcmp(magic, "\x93NUMPY", 6) == 0,
          path + ": not an .npy file (bad magic; expected \\x93NUMPY)");
  const int major = static_cast<unsigned char>(magic[6]);
  require(major >= 1 && major <= 3, path + ": unsupported .npy version " + std::to_string(major));
  uint32_t header_len = 0;
  if (major == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  require(static_cast<bool>(in) && header_len < (1u << 24), path + ": truncated .npy header");
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  require(in.gcount() == static_cast<std::streamsize>(header_len), path + ": truncated .npy header");

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
  // The header's claim against the bytes the file holds, before anything is allocated.
  const auto here = in.tellg();
  in.seekg(0, std::ios::end);
  const auto left = static_cast<uint64_t>(in.tellg() - here);
  in.seekg(here);
  require(!overflow && numel * code->size <= left,
          path + ": the .npy header claims shape (" + dims + "), " +
              (overflow ? std::string("too many elements") : std::to_string(numel * code->size) + " bytes") +
              ", but the file holds " + std::to_string(left) + " data bytes (truncated or a corrupt header)");
  auto tensor = torch::empty(shape, torch::TensorOptions().dtype(code->dtype));
  const auto bytes = static_cast<std::streamsize>(numel * code->size);
  in.read(static_cast<char*>(tensor.data_ptr()), bytes);
  require(in.gcount() == bytes, path + ": truncated: expected " + std::to_string(bytes) + " data bytes, found " +
                                    std::to_string(in.gcount()));
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
