#include "pae/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

#include "pae/util/error.h"
#include "pae/util/fs.h"

namespace pae::train {

namespace {

torch::Tensor string_tensor(const std::string& s) {
  return torch::from_blob(const_cast<char*>(s.data()), {int64_t(s.size())}, torch::kUInt8).clone();
}
std::string tensor_string(const torch::Tensor& t) {
  auto c = t.contiguous();
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

std::string checkpoint_config(const std::string& path) {
  require(fs::is_regular_file(path), "checkpoint not found: " + path);
  const std::string bytes = read_text(path);
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes.data(), bytes.size(), torch::Device(torch::kCPU));
  } catch (const c10::Error& e) {
    throw Error("checkpoint " + path +
                " cannot be read (truncated or not a pae checkpoint): " + first_line(e.what_without_backtrace()));
  }
  torch::Tensor t;
  return try_read(archive, "config", t) ? tensor_string(t) : "";
}

CheckpointState load_checkpoint(const std::string& path, torch::nn::Module& module, const OptimizerMap& optimizers,
                                const std::string& expected_signature, const ArchiveReader& extra) {
  require(fs::is_regular_file(path), "checkpoint not found: " + path);
  return load_checkpoint_bytes(read_text(path), path, module, optimizers, expected_signature, extra);
}

CheckpointState load_checkpoint_bytes(const std::string& bytes, const std::string& path, torch::nn::Module& module,
                                      const OptimizerMap& optimizers, const std::string& expected_signature,
                                      const ArchiveReader& extra) {
  torch::serialize::InputArchive archive;
  try {
    const auto params = module.parameters();
    archive.load_from(bytes.data(), bytes.size(),
                      params.empty() ? torch::Device(torch::kCPU) : params.front().device());
  } catch (const c10::Error& e) {
    throw Error("checkpoint " + path +
                " cannot be read (truncated or not a pae checkpoint): " + first_line(e.what_without_backtrace()));
  }
  CheckpointState state;
  torch::Tensor t;
  require(try_read(archive, "signature", t), "checkpoint " + path + " is not a pae checkpoint (no model signature)");
  state.model_signature = tensor_string(t);
  if (try_read(archive, "config", t)) state.config_yaml = tensor_string(t);
  require(expected_signature.empty() || state.model_signature == expected_signature,
          "checkpoint " + path + " was written by model '" + state.model_signature + "', but the config builds '" +
              expected_signature + "'");
  try {
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    module.load(model_archive);
    for (const auto& [name, optimizer] : optimizers) {
      torch::serialize::InputArchive opt_archive;
      // Checkpoints of single-optimizer runs before parameter groups stored "optimizer".
      if (!archive.try_read("optimizer." + name, opt_archive)) archive.read("optimizer", opt_archive);
      optimizer->load(opt_archive);
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
      gen.set_state(t);
    }
  } catch (const c10::Error& e) {
    throw Error("checkpoint " + path + " does not match the model: " + first_line(e.what_without_backtrace()));
  }
  return state;
}

}  // namespace pae::train
