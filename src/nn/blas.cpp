#include "pae/nn/blas.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>

namespace pae::nn::blas {

namespace {
// The Fortran interface, as LibTorch itself calls it.
using SgemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
using DgemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                         const int*, const double*, const int*, const double*, double*, const int*);

SgemmFn sgemm() {
  static const auto fn = reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "sgemm_"));
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

bool has_sgemm() { return sgemm() != nullptr; }
bool has_dgemm() { return dgemm() != nullptr; }

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  call<float>(sgemm(), trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double* c, int64_t ldc, bool accumulate) {
  call<double>(dgemm(), trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

}  // namespace pae::nn::blas
