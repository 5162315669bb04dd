#include "pae/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <mutex>

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
}  // namespace

void save_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const CheckpointState& state) {
  torch::serialize::OutputArchive archive, model_archive;
  model.save(model_archive);
  archive.write("model", model_archive);
  if (optimizer) {
    torch::serialize::OutputArchive opt_archive;
    optimizer->save(opt_archive);
    archive.write("optimizer", opt_archive);
  }
  archive.write("epoch", torch::tensor(state.epoch, torch::kInt64));
  archive.write("best_val", torch::tensor(state.best_val, torch::kFloat64));
  archive.write("signature", string_tensor(state.model_signature));
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    archive.write("rng_cpu", gen.get_state());
  }
  atomic_write(path, [&](const fs::path& tmp) { archive.save_to(tmp.string()); });
}

CheckpointState load_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                                const std::string& expected_signature) {
  require(fs::is_regular_file(path), "checkpoint not found: " + path);
  torch::serialize::InputArchive archive;
  try {
    const auto params = model.parameters();
    archive.load_from(path, params.empty() ? torch::Device(torch::kCPU) : params.front().device());
  } catch (const c10::Error& e) {
    throw Error("checkpoint " + path + " cannot be read (truncated or not a pae checkpoint): " + first_line(e.what_without_backtrace()));
  }
  CheckpointState state;
  torch::Tensor t;
  try {
    archive.read("signature", t);
    state.model_signature = tensor_string(t);
  } catch (const c10::Error&) {
    throw Error("checkpoint " + path + " is not a pae checkpoint (no model signature)");
  }
  require(expected_signature.empty() || state.model_signature == expected_signature,
          "checkpoint " + path + " was written by model '" + state.model_signature + "', but the config builds '" +
              expected_signature + "'");
  try {
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    model.load(model_archive);
    if (optimizer) {
      torch::serialize::InputArchive opt_archive;
      archive.read("optimizer", opt_archive);
      optimizer->load(opt_archive);
    }
    archive.read("epoch", t);
    state.epoch = t.item<int64_t>();
    archive.read("best_val", t);
    state.best_val = t.item<double>();
    archive.read("rng_cpu", t);
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(t);
  } catch (const c10::Error& e) {
    throw Error("checkpoint " + path + " does not match the model: " + first_line(e.what_without_backtrace()));
  }
  return state;
}

}  // namespace pae::train
