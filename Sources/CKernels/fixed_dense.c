// CKernels: exact mode's dense weight gradient, quantised while hot (declared in CKernels.h).
//
// For each chunk of rows, the chunk's partial weight gradient P = dYᵀ·X is formed in registers,
// one tile at a time, and rounded straight into the Int64 accumulator as round(P·2^s) (the
// FixedPoint encoding of TensorCore/ExactSum.swift), so no per-chunk gradient ever goes to
// memory. Every element of P is the chain p = fma(dy[r][o], x[r][i], p) over the chunk's rows in
// order, from p = 0: a fused multiply-add is one correctly rounded IEEE operation, so the
// AVX-512, AVX2 and baseline builds (the last through fmaf) give the same bits, whatever the
// vector width or tile shape. Rounding to an integer adds 1.5·2^52 in Double (|P·2^s| < 2^51 by
// the caller's choice of s): exact and the same everywhere. Register tiles: kernel_levels.h.
#include "CKernels.h"
#include <math.h>

#define MAGIC 0x1.8p52
#define MAGIC_BITS 0x4338000000000000LL

#define PREFIX fixed_dense
#define BODY "fixed_dense_body.h"
#include "kernel_levels.h"
#undef PREFIX
#undef BODY

void lockstep_fixed_dense_wgrad(int level, const float *dy, const float *x, size_t n, size_t out, size_t in,
                                size_t chunk, long long *acc, int exponent, float *maxAbs, int *nonFinite) {
    if (level < 0) level = lockstep_kernel_level();
#if defined(__x86_64__) && defined(__clang__)
    if (level == 2) { fixed_dense_avx512(dy, x, n, out, in, chunk, acc, exponent, maxAbs, nonFinite); return; }
    if (level == 1 && __builtin_cpu_supports("fma")) { fixed_dense_avx2(dy, x, n, out, in, chunk, acc, exponent, maxAbs, nonFinite); return; }
#endif
    fixed_dense_baseline(dy, x, n, out, in, chunk, acc, exponent, maxAbs, nonFinite);
}
