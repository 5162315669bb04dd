// Process-wide runtime settings: threads, BLAS, devices, seeding.
#pragma once
#include <cstdint>
#include <string>

namespace c10 {
struct Device;
}

namespace pae {

/// What the process found about its BLAS library.
struct BlasInfo {
  std::string library;  ///< resolved path of the library providing sgemm_
  bool is_openblas = false;
  bool is_reference = false;  ///< Debian's slow reference BLAS (netlib)
  std::string core;           ///< OpenBLAS kernel family in use (openblas_get_corename)
};

BlasInfo blas_info();

/// Thread settings chosen for the user. intra_op = 0 means every core this process may use.
/// blas = 0 means 1 thread while LibTorch runs more than one (they oversubscribe otherwise).
struct ThreadSettings {
  int intra_op = 0;
  int blas = 0;
};

/// Applies `requested` and returns the settings in force.
ThreadSettings configure_threads(ThreadSettings requested);

/// OpenBLAS picks its kernels from the CPU model; on CPUs it does not know (virtual machines
/// report "Intel Xeon Processor") it falls back to the SSE3 "Prescott" kernels, ~4x slower
/// than the AVX-512 ones. OPENBLAS_CORETYPE fixes that but is read only at load time, so
/// programs call this first thing in main(): when the kernel is a fallback and the CPU has
/// AVX2/AVX-512, it sets OPENBLAS_CORETYPE and re-executes the program (argv unchanged).
/// Does nothing when OPENBLAS_CORETYPE is already set.
///
/// The same re-execution also makes a program fair on a shared machine: OpenMP threads spin
/// while they wait for each other, and with another busy process on the cores a 2-thread run
/// spends its time slices waiting on a preempted partner (libgomp's default spin: 9% of the quiet
/// speed once a competitor arrived mid-run). It sets a bounded spin, GOMP_SPINCOUNT=kSpinCount
/// (read only at load time): 44% of the quiet speed under load arriving mid-run, ~7% slower
/// quiet (README, Shared machines; bench/under_load.sh). It does not change a number the run
/// computes (the thread count stays). A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone.
inline constexpr const char* kSpinCount = "3000";
void ensure_fast_blas_kernels(int argc, char** argv);

/// What every program does first in main(): the log (progress, warnings, errors) goes to
/// standard error, leaving standard output to results (tables, summaries) that scripts read; and
/// SIGXFSZ is ignored, so that a write past a file-size limit fails (and is reported, naming the
/// file) instead of killing the process.
void init_program();

/// From here on SIGTERM (what Slurm and Kubernetes send before a kill) and SIGINT (Ctrl-C) set a
/// flag, stop_signal(), instead of ending the process: the training engine checks it at every
/// step boundary, writes a checkpoint of the exact state and stops (exit code stop_exit_code()).
/// A second such signal ends the process at once, with the same code. The signals are handled
/// on a thread of their own and blocked in the caller and every thread it starts afterwards:
/// call it first in main(), before LibTorch starts threads. pae-train and pae-flow call it;
/// programs without a loop that checks the flag do not.
void defer_stop_signals();

/// The first SIGTERM or SIGINT received since defer_stop_signals() (0: none).
int stop_signal();

/// Back to no signal received (a test that sent one; the handlers stay).
void forget_stop_signal();

/// The exit code of a process stopped by `signal`: 128 + signal (143 for SIGTERM, 130 for SIGINT),
/// as a shell reports a process the signal ended.
int stop_exit_code(int signal);

/// "SIGTERM", "SIGINT" or "signal N".
std::string signal_name(int signal);

/// Under an address-space limit (`ulimit -v`, as batch systems set one) a failed allocation
/// inside the BLAS or OpenMP does not throw: the process hangs or crashes. Called once the data
/// and model are loaded, this refuses to start (an Error naming the limit and what is left) when
/// less than kTrainingHeadroom bytes of address space are free, then has the BLAS take its work
/// buffer now rather than mid-run. Does nothing without a limit.
void check_memory_headroom();
inline constexpr size_t kTrainingHeadroom = size_t(192) << 20;

/// The address-space limit in bytes (0: none) and the bytes this process maps now.
size_t address_space_limit();
size_t mapped_bytes();

/// Logs a warning when the BLAS in use is the slow reference one, and the kernel fix
/// ensure_fast_blas_kernels applied, if any. Returns the info.
BlasInfo warn_if_slow_blas();

/// Number of cores available to this process (sched_getaffinity, at least 1).
int available_cores();

/// "cpu", "cuda", "cuda:N" or "auto" (cuda when available) -> a device; a clear error otherwise.
c10::Device parse_device(const std::string& text);

/// Seeds LibTorch's CPU (and CUDA, when present) generators.
void seed_everything(uint64_t seed);

}  // namespace pae
