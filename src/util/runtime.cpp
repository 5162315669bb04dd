#include "pae/util/runtime.h"

#include <dlfcn.h>
#include <sched.h>

#include <climits>
#include <cstdlib>
#include <regex>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "pae/util/error.h"

namespace pae {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

BlasInfo blas_info() {
  BlasInfo info;
  void* sym = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info dl{};
  if (sym != nullptr && dladdr(sym, &dl) != 0 && dl.dli_fname != nullptr) {
    char resolved[PATH_MAX];
    info.library = realpath(dl.dli_fname, resolved) ? resolved : dl.dli_fname;
  }
  info.is_openblas = dlsym(RTLD_DEFAULT, "openblas_set_num_threads") != nullptr;
  // Debian's reference BLAS lives in .../blas/libblas.so.3 (the alternatives' lowest priority).
  info.is_reference = !info.is_openblas && info.library.find("/blas/libblas") != std::string::npos;
  return info;
}

BlasInfo warn_if_slow_blas() {
  BlasInfo info = blas_info();
  if (info.is_reference) {
    spdlog::warn(
        "BLAS in use is the slow reference implementation ({}): matrix products run ~30x "
        "slower. Install libopenblas0-pthread (scripts/setup.sh does).",
        info.library);
  }
  return info;
}

ThreadSettings configure_threads(ThreadSettings requested) {
  ThreadSettings s = requested;
  if (s.intra_op <= 0) s.intra_op = available_cores();
  if (s.blas <= 0) s.blas = 1;
  torch::set_num_threads(s.intra_op);
  using SetThreads = void (*)(int);
  if (auto* fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(s.blas);
  }
  return s;
}

c10::Device parse_device(const std::string& text) {
  if (text == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::kCPU;
  if (text == "cpu") return torch::kCPU;
  static const std::regex cuda_re("cuda(:([0-9]+))?");
  std::smatch m;
  if (std::regex_match(text, m, cuda_re)) {
    require(torch::cuda::is_available(),
            "device '" + text + "' requested but this LibTorch build sees no CUDA device");
    const int index = m[2].matched ? std::stoi(m[2].str()) : 0;
    require(index < static_cast<int>(torch::cuda::device_count()),
            "device '" + text + "': only " + std::to_string(torch::cuda::device_count()) +
                " CUDA device(s)");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw Error("device '" + text + "': expected cpu, cuda, cuda:N or auto");
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

}  // namespace pae
