#include "pae/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>

#include "pae/train/optimizer_state.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"

namespace pae::train {

namespace {

torch::Tensor string_tensor(const std::string& s) {
  return torch::from_blob(const_cast<char*>(s.data()), {int64_t(s.size())}, torch::kUInt8).clone();
}
std::string tensor_string(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU).contiguous();  // the archive may have been loaded onto a GPU
  return std::string(static_cast<const char*>(c.data_ptr()), size_t(c.numel()));
}

// Each value is read into a fresh tensor: InputArchive::read into a defined tensor keeps that
// tensor's dtype (a uint8 signature tensor reused for the epoch read it through one byte, and
// the best value came back as 0).
torch::Tensor read_tensor(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor t;
  archive.read(key, t);
  return t;
}
bool try_read(torch::serialize::InputArchive& archive, const std::string& key, torch::Tensor& out) {
  torch::Tensor t;
  if (!archive.try_read(key, t)) return false;
  out = t;
  return true;
}

uint32_t le16(const unsigned char* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8); }
uint32_t le32(const unsigned char* p) { return le16(p) | (le16(p + 2) << 16); }
uint64_t le64(const unsigned char* p) { return uint64_t(le32(p)) | (uint64_t(le32(p + 4)) << 32); }

/// A checkpoint is a zip archive of stored (uncompressed) entries, each with a CRC-32 that
/// LibTorch's reader does not verify; a corrupt entry can crash LibTorch's TorchScript parser
/// (found by fuzzing) or load wrong numbers. Every entry is bounds- and CRC-checked here first.
void verify_zip(const std::string& bytes, const std::string& path) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  const auto corrupt = [&](const std::string& what) {
    return Error("checkpoint " + path + " is corrupt or not a pae checkpoint (" + what + ")");
  };
  // End of central directory: the last "PK\5\6" record, within the 64 KiB comment window.
  if (n < 22) throw corrupt("too short for a zip archive");
  size_t eocd = std::string::npos;
  for (size_t i = n - 22 + 1; i-- > 0 && n - i <= 22 + 65535;)
    if (le32(p + i) == 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd == std::string::npos) throw corrupt("no zip directory at its end; truncated?");
  uint64_t entries = le16(p + eocd + 10), dir_size = le32(p + eocd + 12), dir_offset = le32(p + eocd + 16);
  if (entries == 0xFFFF || dir_size == 0xFFFFFFFF || dir_offset == 0xFFFFFFFF) {  // ZIP64
    if (eocd < 20 || le32(p + eocd - 20) != 0x07064b50) throw corrupt("zip64 locator missing");
    const uint64_t z = le64(p + eocd - 20 + 8);
    if (n < 56 || z > n - 56 || le32(p + z) != 0x06064b50) throw corrupt("zip64 directory record out of bounds");
    entries = le64(p + z + 32);
    dir_size = le64(p + z + 40);
    dir_offset = le64(p + z + 48);
  }
  if (dir_offset > n || dir_size > n - dir_offset) throw corrupt("zip directory out of bounds");
  size_t at = size_t(dir_offset);
  const size_t end = size_t(dir_offset + dir_size);
  for (uint64_t e = 0; e < entries; ++e) {
    if (end - at < 46 || le32(p + at) != 0x02014b50) throw corrupt("zip directory entry " + std::to_string(e));
    const uint32_t method = le16(p + at + 10), crc = le32(p + at + 16);
    uint64_t csize = le32(p + at + 20), usize = le32(p + at + 24), local = le32(p + at + 42);
    const size_t name_len = le16(p + at + 28), extra_len = le16(p + at + 30), comment_len = le16(p + at + 32);
    if (end - at - 46 < name_len + extra_len + comment_len) throw corrupt("zip directory entry out of bounds");
    const std::string name(bytes, at + 46, name_len);
    // ZIP64 sizes and offset in the extra field (id 1), in this order, for the fields saturated above.
    for (size_t x = at + 46 + name_len, xe = x + extra_len; x + 4 <= xe;) {
      const uint32_t id = le16(p + x), len = le16(p + x + 2);
      if (xe - x - 4 < len) throw corrupt("extra field of entry " + name);
      if (id == 1) {
        size_t f = x + 4;
        for (uint64_t* v : {&usize, &csize, &local})
          if (*v == 0xFFFFFFFF) {
            if (f + 8 > x + 4 + len) throw corrupt("zip64 field of entry " + name);
            *v = le64(p + f);
            f += 8;
          }
      }
      x += 4 + len;
    }
    if (method != 0 && method != 8)
      throw corrupt("entry " + name + " uses compression method " + std::to_string(method));
    if (method == 0 && csize != usize) throw corrupt("entry " + name + " has two sizes");
    if (local > n - 30 || le32(p + local) != 0x04034b50) throw corrupt("local header of entry " + name);
    const uint64_t data = local + 30 + le16(p + local + 26) + le16(p + local + 28);
    if (data > n || csize > n - data) throw corrupt("entry " + name + " runs past the end of the file; truncated?");
    uLong sum = crc32(0L, Z_NULL, 0);
    if (method == 0) {
      for (uint64_t off = 0; off < usize;) {  // crc32 takes at most 4 GiB at once
        const uInt chunk = uInt(std::min<uint64_t>(usize - off, 1u << 30));
        sum = crc32(sum, p + data + off, chunk);
        off += chunk;
      }
    } else {  // deflated (LibTorch compresses its small TorchScript entries): inflate to check
      require_memory(usize, "checkpoint " + path + " entry " + name);
      if (csize > std::numeric_limits<uInt>::max() || usize > std::numeric_limits<uInt>::max())
        throw corrupt("entry " + name + " is too large to be compressed");
      std::string out(size_t(usize), '\0');
      z_stream z{};
      if (inflateInit2(&z, -MAX_WBITS) != Z_OK) throw corrupt("cannot inflate entry " + name);
      z.next_in = const_cast<Bytef*>(p + data);
      z.avail_in = uInt(csize);
      z.next_out = reinterpret_cast<Bytef*>(out.data());
      z.avail_out = uInt(usize);
      const int rc = inflate(&z, Z_FINISH);
      const bool whole = rc == Z_STREAM_END && z.avail_out == 0;
      inflateEnd(&z);
      if (!whole) throw corrupt("entry " + name + " does not inflate to its size");
      sum = crc32(sum, reinterpret_cast<const Bytef*>(out.data()), uInt(usize));
    }
    if (uint32_t(sum) != crc) throw corrupt("entry " + name + " fails its CRC-32 check");
    at += 46 + name_len + extra_len + comment_len;
  }
  if (entries == 0) throw corrupt("an empty zip archive");
}

/// The first line of a LibTorch (or other) exception's message, without its backtrace.
std::string what_of(const std::exception& e) {
  if (const auto* c10e = dynamic_cast<const c10::Error*>(&e)) return first_line(c10e->what_without_backtrace());
  std::string msg = e.what();
  const auto start = msg.find_first_not_of(" \n");
  return first_line(start == std::string::npos ? msg : msg.substr(start));
}

/// The CUDA generators' states as saved; a checkpoint written on another number of GPUs (or
/// resumed on the CPU) restores those that exist here, and says so.
void restore_cuda_rng(torch::serialize::InputArchive& archive, const std::string& path) {
  const int64_t here = torch::cuda::is_available() ? int64_t(torch::cuda::device_count()) : 0;
  int64_t saved = 0;
  torch::Tensor t;
  for (; try_read(archive, "rng_cuda." + std::to_string(saved), t); ++saved) {
    if (saved >= here) continue;
    auto gen = at::globalContext().defaultGenerator(c10::Device(c10::DeviceType::CUDA, c10::DeviceIndex(saved)));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(t.to(torch::kCPU));  // set_state takes a CPU byte tensor
  }
  if (saved != here && saved > 0)
    spdlog::warn(
        "{} holds the random state of {} CUDA device(s), this machine has {}: random draws on the GPU "
        "will differ from an uninterrupted run",
        path, saved, here);
}

}  // namespace

void save_checkpoint(const std::string& path, torch::nn::Module& module, const OptimizerMap& optimizers,
                     const CheckpointState& state, const ArchiveWriter& extra) {
  torch::serialize::OutputArchive archive, model_archive;
  module.save(model_archive);
  archive.write("model", model_archive);
  for (const auto& [name, optimizer] : optimizers) {
    torch::serialize::OutputArchive opt_archive;
    optimizer->save(opt_archive);
    archive.write("optimizer." + name, opt_archive);
  }
  archive.write("epoch", torch::tensor(state.epoch, torch::kInt64));
  archive.write("phase", torch::tensor(state.phase, torch::kInt64));
  archive.write("epoch_in_phase", torch::tensor(state.epoch_in_phase, torch::kInt64));
  archive.write("phase_stopped", torch::tensor(int64_t(state.phase_stopped), torch::kInt64));
  archive.write("global_step", torch::tensor(state.global_step, torch::kInt64));
  archive.write("best", torch::tensor(state.best, torch::kFloat64));
  archive.write("best_epoch", torch::tensor(state.best_epoch, torch::kInt64));
  archive.write("stale", torch::tensor(state.stale, torch::kInt64));
  archive.write("signature", string_tensor(state.model_signature));
  archive.write("format_version", torch::tensor(int64_t(2), torch::kInt64));
  if (!state.config_yaml.empty()) archive.write("config", string_tensor(state.config_yaml));
  for (const auto& [group, scale] : state.lr_scale)
    archive.write("lr_scale." + group, torch::tensor(scale, torch::kFloat64));
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    archive.write("rng_cpu", gen.get_state());
  }
  // Each CUDA device's generator (dropout, noise and sampling on the GPU draw from it).
  if (torch::cuda::is_available()) {
    for (int64_t i = 0; i < int64_t(torch::cuda::device_count()); ++i) {
      auto gen = at::globalContext().defaultGenerator(c10::Device(c10::DeviceType::CUDA, c10::DeviceIndex(i)));
      std::lock_guard<std::mutex> lock(gen.mutex());
      archive.write("rng_cuda." + std::to_string(i), gen.get_state());
    }
  }
  if (extra) {
    torch::serialize::OutputArchive extra_archive;
    extra(extra_archive);
    archive.write("extra", extra_archive);
  }
  // Serialised in memory first: LibTorch's file writer, when a write fails (disk full), throws
  // again from its destructor and terminates the process. Our own write reports the failure.
  std::ostringstream bytes;
  archive.save_to(bytes);
  const auto data = bytes.str();
  atomic_write(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.close();
    require(!out.fail(), "cannot write the checkpoint " + path + " (disk full, or over a file-size limit?): " +
                             std::strerror(errno ? errno : EIO) + "; the previous checkpoint, if any, is intact");
  });
}

CheckpointHeader read_checkpoint_header(const std::string& path) {
  require(fs::is_regular_file(path), "checkpoint not found: " + path);
  const std::string bytes = read_text(path);
  verify_zip(bytes, path);
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data(), bytes.size(), torch::Device(torch::kCPU));
  } catch (const std::exception& e) {  // c10::Error, and torch::jit::ErrorReport from a corrupt archive
    throw Error("checkpoint " + path + " cannot be read (truncated or not a pae checkpoint): " + what_of(e));
  }
  CheckpointHeader header;
  torch::Tensor t;
  if (try_read(archive, "config", t) && t.scalar_type() == torch::kUInt8) header.config_yaml = tensor_string(t);
  require(try_read(archive, "epoch", t) && t.numel() == 1,
          "checkpoint " + path + " is not a pae checkpoint (no epoch)");
  header.epoch = header.epoch_in_phase = t.item<int64_t>();
  if (try_read(archive, "phase", t)) header.phase = t.item<int64_t>();
  if (try_read(archive, "epoch_in_phase", t)) header.epoch_in_phase = t.item<int64_t>();
  return header;
}

CheckpointState load_checkpoint(const std::string& path, torch::nn::Module& module, const OptimizerMap& optimizers,
                                const std::string& expected_signature, const ArchiveReader& extra) {
  require(fs::is_regular_file(path), "checkpoint not found: " + path);
  return load_checkpoint_bytes(read_text(path), path, module, optimizers, expected_signature, extra);
}

CheckpointState load_checkpoint_bytes(const std::string& bytes, const std::string& path, torch::nn::Module& module,
                                      const OptimizerMap& optimizers, const std::string& expected_signature,
                                      const ArchiveReader& extra) {
  verify_zip(bytes, path);
  torch::serialize::InputArchive archive;
  try {
    const auto params = module.parameters();
    archive.load_from(bytes.data(), bytes.size(),
                      params.empty() ? torch::Device(torch::kCPU) : params.front().device());
  } catch (const std::exception& e) {  // c10::Error, and torch::jit::ErrorReport from a corrupt archive
    throw Error("checkpoint " + path + " cannot be read (truncated or not a pae checkpoint): " + what_of(e));
  }
  CheckpointState state;
  torch::Tensor t;
  try {
    require(try_read(archive, "signature", t) && t.scalar_type() == torch::kUInt8,
            "checkpoint " + path + " is not a pae checkpoint (no model signature)");
    state.model_signature = tensor_string(t);
    if (try_read(archive, "config", t) && t.scalar_type() == torch::kUInt8) state.config_yaml = tensor_string(t);
    require(expected_signature.empty() || state.model_signature == expected_signature,
            "checkpoint " + path + " was written by model '" + state.model_signature + "', but the config builds '" +
                expected_signature + "'");
    // Module::load replaces each tensor by the stored one whatever its shape: compare them.
    std::vector<std::pair<std::string, torch::Tensor>> before;
    for (const auto& p : module.named_parameters()) before.emplace_back(p.key(), p.value());
    for (const auto& b : module.named_buffers()) before.emplace_back(b.key(), b.value());
    std::vector<std::pair<std::vector<int64_t>, c10::ScalarType>> kinds;
    for (const auto& [name, tensor] : before) kinds.emplace_back(tensor.sizes().vec(), tensor.scalar_type());
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    module.load(model_archive);
    for (size_t i = 0; i < before.size(); ++i) {
      const auto& now = before[i].second;
      require(now.sizes().vec() == kinds[i].first && now.scalar_type() == kinds[i].second,
              "checkpoint " + path + ": tensor '" + before[i].first + "' is stored with shape " +
                  c10::str(now.sizes()) + " (" + c10::toString(now.scalar_type()) + "), the model has " +
                  c10::str(c10::IntArrayRef(kinds[i].first)) + " (" + c10::toString(kinds[i].second) + ")");
    }
    for (const auto& [name, optimizer] : optimizers) {
      torch::serialize::InputArchive opt_archive;
      // Checkpoints of single-optimizer runs before parameter groups stored "optimizer".
      if (!archive.try_read("optimizer." + name, opt_archive)) archive.read("optimizer", opt_archive);
      load_optimizer_state(opt_archive, *optimizer, "checkpoint " + path);
    }
    state.epoch = read_tensor(archive, "epoch").item<int64_t>();
    if (try_read(archive, "best", t)) {
      state.best = t.item<double>();
      state.phase = read_tensor(archive, "phase").item<int64_t>();
      state.epoch_in_phase = read_tensor(archive, "epoch_in_phase").item<int64_t>();
      state.phase_stopped = read_tensor(archive, "phase_stopped").item<int64_t>() != 0;
      state.global_step = read_tensor(archive, "global_step").item<int64_t>();
      state.best_epoch = read_tensor(archive, "best_epoch").item<int64_t>();
      state.stale = read_tensor(archive, "stale").item<int64_t>();
      for (const auto& [group, optimizer] : optimizers)
        if (try_read(archive, "lr_scale." + group, t)) state.lr_scale[group] = t.item<double>();
    } else {
      state.epoch_in_phase = state.epoch;  // an older single-phase checkpoint
    }
    if (extra) {
      torch::serialize::InputArchive extra_archive;
      archive.read("extra", extra_archive);
      extra(extra_archive);
    }
    if (!optimizers.empty()) {  // resuming training: the random stream continues too
      t = read_tensor(archive, "rng_cpu");
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(t.to(torch::kCPU));
      restore_cuda_rng(archive, path);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("checkpoint " + path + " does not match the model: " + what_of(e));
  }
  return state;
}

}  // namespace pae::train
