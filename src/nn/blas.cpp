#include "pae/nn/blas.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "pae/util/error.h"

namespace pae::nn::blas {

namespace {
// The Fortran interface, as LibTorch itself calls it.
using SgemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
using DgemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                         const int*, const double*, const int*, const double*, double*, const int*);

// oneDNN's row-major product (dnnl.h), in the libdnnl that LibTorch links for its convolutions.
using OnednnSgemmFn = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                              int64_t, float, float*, int64_t);

SgemmFn sgemm() {
  static const auto fn = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "sgemm_"));
  return fn;
}
/// oneDNN's product, or null for the BLAS: PAE_SGEMM unset or empty takes oneDNN's where the
/// process has it, "blas" the BLAS, "onednn" oneDNN's or an error.
OnednnSgemmFn onednn_sgemm() {
  static const auto fn = [] {
    const char* env = std::getenv("PAE_SGEMM");
    const std::string choice = env != nullptr ? env : "";
    require(choice.empty() || choice == "blas" || choice == "onednn",
            "PAE_SGEMM='" + choice + "': expected blas or onednn (or unset: oneDNN's where the process has it)");
    if (choice == "blas") return OnednnSgemmFn(nullptr);
    const auto found = reinterpret_cast<OnednnSgemmFn>(dlsym(RTLD_DEFAULT, "dnnl_sgemm"));
    require(found != nullptr || choice.empty(),
            "PAE_SGEMM=onednn: this process has no dnnl_sgemm (a LibTorch without a shared libdnnl); unset it to "
            "use the BLAS");
    return found;
  }();
  return fn;
}
DgemmFn dgemm() {
  static const auto fn = reinterpret_cast<DgemmFn>(dlsym(RTLD_DEFAULT, "dgemm_"));
  return fn;
}

/// The column-major call computes C^T = B'^T A'^T.
template <typename T, typename Fn>
void call(Fn fn, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T* c, int64_t ldc, bool accumulate) {
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int im = int(m), in = int(n), ik = int(k), ilda = int(lda), ildb = int(ldb), ildc = int(ldc);
  const T one = 1, beta = accumulate ? 1 : 0;
  fn(&tb, &ta, &in, &im, &ik, &one, b, &ildb, a, &ilda, &beta, c, &ildc);
}
}  // namespace

int64_t row_grain(int64_t n) {
  const int64_t t = at::get_num_threads();
  return std::max<int64_t>(1, (n + t - 1) / t);
}

bool has_sgemm() { return onednn_sgemm() != nullptr || sgemm() != nullptr; }
const char* sgemm_library() { return onednn_sgemm() ? "onednn" : sgemm() ? "blas" : "none"; }
bool has_dgemm() { return dgemm() != nullptr; }

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // an empty sum: C = 0 (+ C), as the BLAS defines it; oneDNN's leaves C as it was
    if (!accumulate)
      for (int64_t r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, 0.0f);
    return;
  }
  if (const auto fn = onednn_sgemm()) {
    // oneDNN threads a call made outside a parallel region itself (over OpenMP): keep every
    // product single-threaded, as the callers' blocks assume, whoever calls.
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads > 1) omp_set_num_threads(1);
    const int status =
        fn(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c, ldc);
    if (threads > 1) omp_set_num_threads(threads);
    if (status == 0) return;  // dnnl_success
    // Out of memory (its packing buffers): the same product through the BLAS. Anything else is
    // a caller's wrong shape or leading dimension, not to be papered over.
    TORCH_CHECK(status == 1 && sgemm() != nullptr, "dnnl_sgemm failed (status ", status, ") for ", trans_a ? "T" : "N",
                trans_b ? "T" : "N", " m ", m, " n ", n, " k ", k, " lda ", lda, " ldb ", ldb, " ldc ", ldc);
  }
  // Callers check has_sgemm() first: a LibTorch that exposes no product (a wheel with its BLAS
  // linked in privately) takes LibTorch's operations instead.
  TORCH_CHECK(sgemm() != nullptr, "pae::nn::blas::gemm: no float product in this process (has_sgemm() is false)");
  call<float>(sgemm(), trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double* c, int64_t ldc, bool accumulate) {
  TORCH_CHECK(dgemm() != nullptr, "pae::nn::blas::gemm: no double product in this process (has_dgemm() is false)");
  call<double>(dgemm(), trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

}  // namespace pae::nn::blas
