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

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
/// One 16 × 16 block, in registers: pairs of rows interleaved by 32 then 64 bits, then 128-bit
/// lanes exchanged twice. Only moves: the same floats as the loop below.
__attribute__((target("avx512f")))
static void transpose16_avx512(const float *src, size_t cols, float *dst, size_t rows) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + (size_t)i * cols);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xDD);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + (size_t)i * rows, r[i]);
}
#endif

void lockstep_transpose(const float *restrict src, size_t rows, size_t cols, float *restrict dst) {
    const size_t T = 16;   // 16×16 tiles: 16 lines a side, within L1's ways even at power-of-two strides
#if defined(__x86_64__) && defined(__clang__)
    // Whole tiles in registers with AVX-512 (a dense layer's forward moved 4% of a 2-rank MLP
    // step through the scalar loop); the edges below as before.
    const int wide = lockstep_kernel_level() == 2;
#else
    const int wide = 0;
#endif
    for (size_t i0 = 0; i0 < rows; i0 += T)
        for (size_t j0 = 0; j0 < cols; j0 += T) {
            const size_t i1 = i0 + T < rows ? i0 + T : rows, j1 = j0 + T < cols ? j0 + T : cols;
#if defined(__x86_64__) && defined(__clang__)
            if (wide && i1 - i0 == T && j1 - j0 == T) {
                transpose16_avx512(src + i0 * cols + j0, cols, dst + j0 * rows + i0, rows);
                continue;
            }
#endif
            for (size_t i = i0; i < i1; i++)
                for (size_t j = j0; j < j1; j++) dst[j * rows + i] = src[i * cols + j];
        }
}
