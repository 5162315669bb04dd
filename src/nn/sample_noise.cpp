#include "pae/nn/sample_noise.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <torch/torch.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

namespace pae::nn {

struct SampleNoiseScope::State {
  uint64_t seed;
  int64_t offset, global_size;
  std::map<std::string, at::Generator> generators;  // per device, made at the step's first draw there

  at::Generator& generator(const c10::Device& device) {
    auto it = generators.find(device.str());
    if (it != generators.end()) return it->second;
    at::Generator g;
    if (device.is_cpu()) {
      g = at::detail::createCPUGenerator(seed);
    } else {  // a generator of the device's kind: a copy of its default one, reseeded
      auto base = at::globalContext().defaultGenerator(device);  // a handle on the same generator
      std::lock_guard<std::mutex> lock(base.mutex());
      g = base.clone();
      g.set_current_seed(seed);
    }
    return generators.emplace(device.str(), g).first->second;
  }
  /// The draw's first dimension: the global batch's (or n, unsplit).
  int64_t draw_rows(int64_t n) const { return global_size > 0 ? global_size : n; }
  /// Rows [offset, offset + n) of a draw for the global batch.
  at::Tensor rows(const at::Tensor& global, int64_t n) const {
    if (global_size == 0) return global;
    if (offset + n > global_size)
      throw std::logic_error("sample noise: rows [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                             ") of a batch of " + std::to_string(global_size));
    return global.slice(0, offset, offset + n);
  }
};

namespace {

thread_local SampleNoiseScope::State* current = nullptr;

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

SampleNoiseScope::SampleNoiseScope(uint64_t seed, int64_t step, int64_t offset, int64_t global_size)
    : state_(new State{splitmix64(splitmix64(seed) ^ uint64_t(step)), offset, global_size, {}}) {
  if (current) throw std::logic_error("SampleNoiseScope: scopes do not nest");
  current = state_.get();
}

SampleNoiseScope::~SampleNoiseScope() { current = nullptr; }

at::Tensor sample_randn_like(const at::Tensor& rows) {
  if (!current) return torch::randn_like(rows);
  auto sizes = rows.sizes().vec();
  const int64_t n = sizes.at(0);
  sizes[0] = current->draw_rows(n);
  return current->rows(at::randn(sizes, current->generator(rows.device()), rows.options()), n);
}

at::Tensor sample_randint(int64_t high, int64_t n) {
  const auto options = torch::TensorOptions().dtype(torch::kInt64);
  if (!current) return torch::randint(0, high, {n}, options);
  return current->rows(at::randint(high, {current->draw_rows(n)}, current->generator(torch::kCPU), options), n);
}

}  // namespace pae::nn
