// CKernels: a GEMM whose every row depends on the same row of A alone (declared in CKernels.h).
//
// Exact mode needs a sample's activations and input gradients not to depend on which other
// samples share its GEMM. OpenBLAS does not promise that: measured on OpenBLAS 0.3.21, its
// Haswell sgemm gives a row other bits in a 128-row call than in a 16-row call (its Cooperlake
// kernel mostly does not), so exact mode used to run one sgemm per chunk, at 60% of the
// sgemm rate. Here C[i][j] = Σ_t A[i][t]·B[t][j] is one fused multiply-add chain over t in
// order, from 0, for every element: the same whatever m is, and, like fixed_dense.c, the same
// bits at every vector level. Register tiles: kernel_levels.h.
#include "CKernels.h"
#include <stdlib.h>

#define PREFIX rowwise
#define BODY "rowwise_body.h"
#include "kernel_levels.h"
#undef PREFIX
#undef BODY

void lockstep_rowwise_gemm(int level, const float *a, size_t lda, const float *b, size_t ldb,
                           size_t m, size_t n, size_t k, float *c, size_t ldc) {
    if (level < 0) level = lockstep_kernel_level();
#if defined(__x86_64__) && defined(__clang__)
    if (level == 2) { rowwise_avx512(a, lda, b, ldb, m, n, k, c, ldc); return; }
    if (level == 1 && __builtin_cpu_supports("fma")) { rowwise_avx2(a, lda, b, ldb, m, n, k, c, ldc); return; }
#endif
    rowwise_baseline(a, lda, b, ldb, m, n, k, c, ldc);
}

void lockstep_transpose(const float *restrict src, size_t rows, size_t cols, float *restrict dst) {
    const size_t T = 16;   // 16×16 tiles: 16 lines a side, within L1's ways even at power-of-two strides
    for (size_t i0 = 0; i0 < rows; i0 += T)
        for (size_t j0 = 0; j0 < cols; j0 += T) {
            const size_t i1 = i0 + T < rows ? i0 + T : rows, j1 = j0 + T < cols ? j0 + T : cols;
            for (size_t i = i0; i < i1; i++)
                for (size_t j = j0; j < j1; j++) dst[j * rows + i] = src[i * cols + j];
        }
}
