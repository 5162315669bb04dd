#include "pae/util/runtime.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <malloc.h>
#include <sched.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <regex>
#include <thread>

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
  using CoreName = char* (*)();
  if (auto* fn = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"))) info.core = fn();
  // Debian's reference BLAS lives in .../blas/libblas.so.3 (the alternatives' lowest priority).
  info.is_reference = !info.is_openblas && info.library.find("/blas/libblas") != std::string::npos;
  return info;
}

namespace {

/// The OpenBLAS kernel family to ask for, when OpenBLAS fell back to slow generic kernels.
const char* faster_blas_core(const BlasInfo& info) {
  if (!info.is_openblas || info.core.empty()) return nullptr;
  std::string core = info.core;
  std::transform(core.begin(), core.end(), core.begin(), ::tolower);
  static const char* kFallbacks[] = {"prescott", "core2",      "penryn",    "dunnington", "nehalem", "atom",
                                     "katmai",   "coppermine", "northwood", "banias",     "unknown"};
  bool fallback = false;
  for (const char* f : kFallbacks) fallback = fallback || core == f;
  if (!fallback) return nullptr;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") ? "SkylakeX" : __builtin_cpu_supports("avx2") ? "Haswell" : nullptr;
}

}  // namespace

void ensure_fast_blas_kernels(int /*argc*/, char** argv) {
  if (std::getenv("PAE_REEXECUTED") != nullptr) {  // once
    unsetenv("PAE_REEXECUTED");
    return;
  }
  bool again = false;
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    const BlasInfo info = blas_info();
    if (const char* want = faster_blas_core(info)) {
      setenv("OPENBLAS_CORETYPE", want, 1);
      setenv("PAE_BLAS_FALLBACK_CORE", info.core.c_str(), 1);
      again = true;
    }
  }
  // OpenMP threads spin a while when they wait for each other (libgomp's default spins 100x
  // longer: once another busy process shares the cores, the threads burn their slices waiting on
  // a preempted partner), then sleep.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr && available_cores() > 1) {
    setenv("GOMP_SPINCOUNT", kSpinCount, 1);
    again = true;
  }
  if (!again) return;
  setenv("PAE_REEXECUTED", "1", 1);
  // By the executable's own path, so that the process keeps its name (ps, top, pgrep, kill
  // scripts); /proc/self/exe itself would rename it "exe".
  char self[PATH_MAX];
  const ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
  if (length > 0) {
    self[length] = '\0';
    execv(self, argv);
  }
  execv("/proc/self/exe", argv);  // returns only on failure: carry on as we are
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv("GOMP_SPINCOUNT");
}

namespace {

volatile std::sig_atomic_t first_stop_signal = 0;

extern "C" void on_stop_signal(int signal) {
  if (first_stop_signal != 0) _exit(128 + signal);  // the second one: now
  first_stop_signal = signal;
}

}  // namespace

void defer_stop_signals() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  // The handler runs on a thread that only waits for it: a handler run on a computing thread
  // interrupts whatever that thread is doing, and oneDNN's JIT sgemm does not survive that (the
  // heap was corrupted in ~8% of runs signalled during training, and in none with the BLAS's
  // sgemm). This thread starts with the signals open; then the calling thread, and every thread
  // it starts from here on (OpenMP's, oneDNN's), blocks them.
  std::thread([] {
    for (;;) pause();
  }).detach();
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
}

int stop_signal() { return first_stop_signal; }

void forget_stop_signal() { first_stop_signal = 0; }

int stop_exit_code(int signal) { return 128 + signal; }

std::string signal_name(int signal) {
  if (signal == SIGTERM) return "SIGTERM";
  if (signal == SIGINT) return "SIGINT";
  return "signal " + std::to_string(signal);
}

size_t address_space_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 0;
  return size_t(limit.rlim_cur);
}

size_t mapped_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  size_t kib = 0;
  while (status >> key) {
    if (key == "VmSize:" && status >> kib) return kib * 1024;
    status.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

void check_memory_headroom() {
  const size_t limit = address_space_limit();
  if (limit == 0) return;
  void* room = mmap(nullptr, kTrainingHeadroom, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (room == MAP_FAILED) {
    const size_t used = mapped_bytes(), free = limit > used ? limit - used : 0;
    throw Error(fmt::format(
        "the address-space limit (ulimit -v {} KiB) leaves {} MiB once the data and the model are loaded (the "
        "process maps {} MiB); training needs about {} MiB more (the BLAS's work buffer, batch activations): raise "
        "the limit, or use a smaller data.subset or train.batch_size",
        limit / 1024, free >> 20, used >> 20, kTrainingHeadroom >> 20));
  }
  munmap(room, kTrainingHeadroom);
  torch::mm(torch::ones({8, 8}), torch::ones({8, 8}));  // OpenBLAS takes its 128 MiB buffer now
}

void init_program() {
  std::signal(SIGXFSZ, SIG_IGN);
  // glibc loads libgcc_s for the first backtrace (LibTorch takes one for every c10::Error): done
  // now, as under a tight memory limit the load fails later and aborts the process.
  void* frames[2];
  backtrace(frames, 2);
  spdlog::set_default_logger(
      std::make_shared<spdlog::logger>("", std::make_shared<spdlog::sinks::stderr_color_sink_mt>()));
}

BlasInfo warn_if_slow_blas() {
  BlasInfo info = blas_info();
  if (const char* old = std::getenv("PAE_BLAS_FALLBACK_CORE")) {
    spdlog::info(
        "OpenBLAS had picked its '{}' kernels for this CPU; restarted with OPENBLAS_CORETYPE={} "
        "(set OPENBLAS_CORETYPE yourself to choose)",
        old, info.core);
    unsetenv("PAE_BLAS_FALLBACK_CORE");
  }
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
  // Denormal floats (tiny gradients late in training) are ~100x slower on x86: flush them.
  at::globalContext().setFlushDenormal(true);
  // Keep freed tensor memory in the heap: glibc's default returns every large block to the
  // system with munmap, and each training step then pays page faults to zero fresh pages.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
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
    require(torch::cuda::is_available(), "device '" + text + "' requested but this LibTorch build sees no CUDA device");
    const int index = m[2].matched ? std::stoi(m[2].str()) : 0;
    require(index < static_cast<int>(torch::cuda::device_count()),
            "device '" + text + "': only " + std::to_string(torch::cuda::device_count()) + " CUDA device(s)");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw Error("device '" + text + "': expected cpu, cuda, cuda:N or auto");
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

}  // namespace pae
