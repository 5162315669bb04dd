// Row-major matrix products on raw pointers, single-threaded, and the element loops around them.
// Float products run on oneDNN's sgemm when the process has it (the libdnnl LibTorch links for
// its convolutions: JIT kernels for the CPU at hand, AVX-512 included, twice OpenBLAS 0.3.21's
// Haswell kernels on this project's Zen 4 machines), else on the process's own BLAS (the one
// LibTorch calls, found by symbol); double products always on the BLAS. PAE_SGEMM=blas forces
// the BLAS for float too (A/B benchmarks), PAE_SGEMM=onednn insists on oneDNN's. The callers
// (pae/nn/dense.h, pae/flows/fused_coupling.h) split the work over the intra-op threads
// themselves, in blocks that never share a reduction.
#pragma once
#include <cstdint>

namespace pae::nn::blas {

/// Whether the process has the BLAS routine for float (double) products; without it (e.g. a
/// LibTorch with a static MKL) callers use LibTorch's own operations.
bool has_sgemm();
bool has_dgemm();
/// Which library float products run on: "onednn", "blas" or "none". Throws pae::Error for a
/// PAE_SGEMM other than blas or onednn, or onednn where the process has no dnnl_sgemm (as every
/// function here does that runs a float product).
const char* sgemm_library();
/// C[m,n] = A'[m,k] B'[k,n] (+ C when accumulate), row-major; A' = A, or A^T when trans_a, as
/// stored with leading dimension lda (likewise B'). Requires has_sgemm() (has_dgemm()).
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc, bool accumulate = false);
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double* c, int64_t ldc, bool accumulate = false);

/// Rows per block so that `n` rows spread over the intra-op threads.
int64_t row_grain(int64_t n);

// Element loops on non-aliasing pointers, so that they vectorise (a branch per element, taken at
// random as ReLU masks are, costs more than the matrix product it follows).

/// v = max(v, 0), as clamp_min(0): NaN and -0 pass.
template <typename T>
void relu_in_place(T* __restrict v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = v[i] < T(0) ? T(0) : v[i];
}
/// out = g where y > 0, else 0 (threshold_backward); both loads unconditional, so it vectorises.
template <typename T>
void relu_mask(const T* __restrict g, const T* __restrict y, T* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i], yi = y[i];
    out[i] = yi <= T(0) ? T(0) : gi;
  }
}
/// The same in place.
template <typename T>
void relu_mask_in_place(T* __restrict g, const T* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i], yi = y[i];
    g[i] = yi <= T(0) ? T(0) : gi;
  }
}
/// sum[j] = sum over `rows` rows (stride `stride`) of g[r, j], j < n: in row order.
template <typename T>
void add_rows(const T* __restrict g, int64_t rows, int64_t stride, int64_t n, T* __restrict sum) {
  for (int64_t j = 0; j < n; ++j) sum[j] = T(0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) sum[j] += g[r * stride + j];
}

}  // namespace pae::nn::blas
