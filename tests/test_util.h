// Shared test helpers: a temporary directory removed at the end of each test.
#pragma once
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/optim/adam.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "pae/train/engine.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/runtime.h"

namespace pae::testing {

/// The device of the tests where a device matters: PAE_TEST_DEVICE (cpu, cuda or cuda:N; unset:
/// cpu). `skip` is why the test cannot run here (CUDA asked for and absent), else empty.
struct TestDevice {
  c10::Device device = c10::Device(c10::kCPU);
  std::string skip;
};
inline TestDevice test_device() {
  const char* env = std::getenv("PAE_TEST_DEVICE");
  const std::string name = env ? env : "";
  TestDevice d;
  if (name.empty() || name == "cpu") return d;
  if (name.rfind("cuda", 0) == 0 && !torch::cuda::is_available()) {
    d.skip = "PAE_TEST_DEVICE=" + name + ", and this LibTorch sees no CUDA device";
    return d;
  }
  try {
    d.device = pae::parse_device(name);
  } catch (const pae::Error& e) {
    ADD_FAILURE() << "PAE_TEST_DEVICE: " << e.what();
    d.skip = e.what();
  }
  return d;
}

/// Equal on the CPU (bit for bit); on a GPU, within its float nondeterminism (reductions whose
/// order varies from run to run).
inline ::testing::AssertionResult same_on(const c10::Device& device, const at::Tensor& a, const at::Tensor& b) {
  const bool same =
      a.sizes() == b.sizes() && (device.is_cpu() ? a.cpu().equal(b.cpu()) : a.cpu().allclose(b.cpu(), 1e-5, 1e-6));
  if (same) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "differ on " << device.str() << " (max |a - b| "
                                       << (a.sizes() == b.sizes() ? (a.cpu() - b.cpu()).abs().max().item<double>()
                                                                  : -1.0)
                                       << ")";
}

/// Declares `c10::Device var`, the device under test, or skips the test with the reason.
#define PAE_DEVICE_UNDER_TEST(var)                                           \
  const auto var##_under_test = pae::testing::test_device();                 \
  if (!var##_under_test.skip.empty()) GTEST_SKIP() << var##_under_test.skip; \
  const c10::Device var = var##_under_test.device

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("pae_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// Runs `steps` optimizer steps of `trainable` (Adam, lr 1e-3) on the single batch `x`
/// through the engine (no run directory, no validation).
template <class TrainableT, class TensorT>
void engine_steps(TrainableT& trainable, const TensorT& x, int64_t steps) {
  pae::train::EngineOptions eo;
  eo.epochs = steps;
  eo.batch_size = x.size(0);
  eo.optimizers[""] = pae::train::OptimizerOptions{};
  eo.quiet = true;
  eo.device = x.device();
  pae::train::TrainData data;
  data.size = x.size(0);
  data.batch = [&](const TensorT& idx) { return pae::nn::Batch{x.index_select(0, idx.to(x.device())), {}}; };
  pae::train::Engine(eo).fit(trainable, data);
}

/// A StepContext for one model step outside the engine: steps only `group` (its own Adam over
/// `params`); other groups' steps are not taken (no backward). Reports `phase` as the phase.
class OneGroupContext : public pae::nn::StepContext {
 public:
  OneGroupContext(std::string group, std::vector<at::Tensor> params, double lr, std::string phase = "train")
      : group_(std::move(group)), phase_(std::move(phase)), opt_(params, torch::optim::AdamOptions(lr)) {}
  void step(const std::string& group, const at::Tensor& loss, const pae::nn::TensorTerms&) override {
    if (group != group_) return;
    opt_.zero_grad();
    loss.backward();
    opt_.step();
    ++steps;
  }
  void log(const std::string&, const at::Tensor&) override {}
  const std::string& phase() const override { return phase_; }
  int64_t phase_index() const override { return 0; }
  int64_t epoch() const override { return 1; }
  int64_t global_step() const override { return 0; }
  c10::Device device() const override { return c10::Device(c10::kCPU); }
  int64_t steps = 0;  ///< steps of `group` taken

 private:
  std::string group_, phase_;
  torch::optim::Adam opt_;
};

/// A sink that "kills" a run (throws) once epoch `at`'s metrics are out, before its checkpoint.
struct KillAfterMetrics : pae::report::MetricsSink {
  explicit KillAfterMetrics(int64_t epoch) : at(epoch) {}
  void on_epoch(const pae::report::EpochRecord& r) override {
    if (r.epoch == at) throw std::runtime_error("killed after the metrics of epoch " + std::to_string(at));
  }
  int64_t at;
};

/// A metrics.jsonl without its timing fields (they differ between any two runs).
inline std::string metrics_without_timing(const std::string& path) {
  std::istringstream in(pae::read_text(path));
  std::string out, line;
  while (std::getline(in, line)) {
    for (const char* key : {", \"images_per_s\": ", ", \"seconds\": "}) {
      const auto at = line.find(key);
      EXPECT_NE(at, std::string::npos) << line;
      if (at != std::string::npos) line.erase(at, line.find_first_of(",}", at + std::strlen(key)) - at);
    }
    out += line + "\n";
  }
  return out;
}

/// The names listed after "valid names: " in a registry error (comma-separated), so that a test
/// cannot pass by finding a name inside the bad name the message repeats.
inline std::vector<std::string> listed_names(const std::string& message) {
  std::vector<std::string> out;
  const auto at = message.find("valid names: ");
  if (at == std::string::npos) return out;
  std::stringstream ss(message.substr(at + 13));
  for (std::string item; std::getline(ss, item, ',');) {
    while (!item.empty() && item.front() == ' ') item.erase(0, 1);
    out.push_back(item);
  }
  return out;
}

/// Runs `fn` and returns the message of the pae::Error it throws ("" if none).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const pae::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace pae::testing
