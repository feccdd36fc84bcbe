// CKernels: the C elementwise loops declared in include/CKernels.h (see there for why C), one
// body per kernel compiled at each instruction-set level, and the choice of level.
#include "CKernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__clang__)
#define LOCKSTEP_X86 1
#define AT_AVX512 __attribute__((target("avx512f")))
#define AT_AVX2 __attribute__((target("avx2")))
#else
#define LOCKSTEP_X86 0
#endif

int lockstep_kernel_level_supported(int level) {
    if (level == 0) return 1;
#if LOCKSTEP_X86
    __builtin_cpu_init();
    if (level == 1) return __builtin_cpu_supports("avx2");
    if (level == 2) return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

int lockstep_kernel_level(void) {
    static int cached = -1;   // shared by thread ranks: an atomic int, computed at most a few times
    int level = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (level < 0) {
        level = lockstep_kernel_level_supported(2) ? 2 : lockstep_kernel_level_supported(1) ? 1 : 0;
        // LOCKSTEP_KERNEL_LEVEL=avx2 (or baseline) caps the level: to measure what a CPU without
        // AVX-512 gets. The bits do not change (every level gives the same).
        const char *cap = getenv("LOCKSTEP_KERNEL_LEVEL");
        if (cap && strcmp(cap, "avx2") == 0 && level > 1) level = 1;
        if (cap && strcmp(cap, "baseline") == 0) level = 0;
        __atomic_store_n(&cached, level, __ATOMIC_RELAXED);
    }
    return level;
}

const char *lockstep_kernel_level_name(int level) {
    return level == 2 ? "avx512f" : level == 1 ? "avx2" : "baseline";
}

#if LOCKSTEP_X86
__attribute__((target("avx"))) static void zero_upper(void) { __builtin_ia32_vzeroupper(); }
#endif

void lockstep_clear_upper_state(void) {
#if LOCKSTEP_X86
    static int avx = -1;   // an atomic int, as in lockstep_kernel_level
    int has = __atomic_load_n(&avx, __ATOMIC_RELAXED);
    if (has < 0) {
        __builtin_cpu_init();
        has = __builtin_cpu_supports("avx") ? 1 : 0;
        __atomic_store_n(&avx, has, __ATOMIC_RELAXED);
    }
    if (has) zero_upper();
#endif
}

// A kernel whose body is the macro K##_BODY over the parameters K##_ARGS: `fn`_baseline,
// `fn`_avx2 and `fn`_avx512 compiled from it, and the public `entry`(level, K##_ARGS) that runs
// the one `level` asks for (−1: the best this CPU runs) with the arguments `call`.
#if LOCKSTEP_X86
#define LEVELED_X86(fn, K)                                                         \
    AT_AVX2 static void fn##_avx2(K##_ARGS) { K##_BODY }                           \
    AT_AVX512 static void fn##_avx512(K##_ARGS) { K##_BODY }
#define LEVELED_X86_CALL(fn, call)                                                 \
    if (level == 2) { fn##_avx512 call; return; }                                  \
    if (level == 1) { fn##_avx2 call; return; }
#else
#define LEVELED_X86(fn, K)
#define LEVELED_X86_CALL(fn, call)
#endif
#define LEVELED_KERNEL(entry, fn, K, call)                                         \
    static void fn##_baseline(K##_ARGS) { K##_BODY }                               \
    LEVELED_X86(fn, K)                                                             \
    void entry(int level, K##_ARGS) {                                              \
        if (level < 0) level = lockstep_kernel_level();                            \
        LEVELED_X86_CALL(fn, call)                                                 \
        fn##_baseline call;                                                        \
    }

// The Adam body, inlined into each level's function.
#define ADAM_BODY                                                                  \
    const float c1 = 1 - b1, c2 = 1 - b2;                                          \
    for (size_t i = 0; i < n; i++) {                                               \
        const float wi = w[i];                                                     \
        const float grad = g[i] + l2 * wi;                                         \
        const float mi = b1 * m[i] + c1 * grad;                                    \
        const float vi = b2 * v[i] + c2 * grad * grad;                             \
        m[i] = mi;                                                                 \
        v[i] = vi;                                                                 \
        w[i] = wi * shrink - stepSize * mi / (sqrtf(vi * invC2) + eps);            \
    }
#define ADAM_ARGS float *restrict w, const float *restrict g, float *restrict m, float *restrict v, size_t n, \
    float b1, float b2, float eps, float l2, float shrink, float stepSize, float invC2

LEVELED_KERNEL(lockstep_adam_step, adam, ADAM, (w, g, m, v, n, b1, b2, eps, l2, shrink, stepSize, invC2))

// Copies with streaming stores: whole vectors once dst is aligned to one, plain stores before
// and after. What is copied never enters the caches (a checkpoint's image, read next by the
// disk), so it evicts nothing the step needs.
#if LOCKSTEP_X86
#include <immintrin.h>
#define STREAM_COPY(fn, ATTR, W, VEC, LOAD, STORE)                                 \
    ATTR static void fn(float *restrict dst, const float *restrict src, size_t n) { \
        size_t i = 0;                                                              \
        while (i < n && ((uintptr_t)(dst + i) % (W * sizeof(float))) != 0) { dst[i] = src[i]; i++; } \
        for (; i + W <= n; i += W) STORE(dst + i, LOAD(src + i));                  \
        for (; i < n; i++) dst[i] = src[i];                                        \
    }
STREAM_COPY(stream_copy_avx512, AT_AVX512, 16, __m512, _mm512_loadu_ps, _mm512_stream_ps)
STREAM_COPY(stream_copy_avx2, AT_AVX2, 8, __m256, _mm256_loadu_ps, _mm256_stream_ps)
STREAM_COPY(stream_copy_sse, , 4, __m128, _mm_loadu_ps, _mm_stream_ps)
#endif

void lockstep_stream_copy(int level, float *restrict dst, const float *restrict src, size_t n) {
    if (level < 0) level = lockstep_kernel_level();
#if LOCKSTEP_X86
    if (level == 2) stream_copy_avx512(dst, src, n);
    else if (level == 1) stream_copy_avx2(dst, src, n);
    else stream_copy_sse(dst, src, n);
#else
    memcpy(dst, src, n * sizeof(float));
#endif
}

void lockstep_stream_fence(void) {
#if LOCKSTEP_X86
    _mm_sfence();
#endif
}

// ExactSum.addColumns (TensorCore/ExactSum.swift): each value's 5 signed 32-bit digits (unit
// 2^-64 for digit 0) and its non-finite count, added into digit-major columns. Digit d is
// round(r·2^(64−32d)) read from the bits of r·2^(64−32d) + 1.5·2^52, and r loses it exactly; the
// same operations in the same order as the Swift reference, so the same words at every level.
#define EXACT_COLUMNS_ARGS const double *restrict values, size_t count, int64_t *restrict acc
#define EXACT_COLUMNS_BODY                                                         \
    const double down[5] = {0x1p64, 0x1p32, 1.0, 0x1p-32, 0x1p-64};                \
    const double up[5] = {0x1p-64, 0x1p-32, 1.0, 0x1p32, 0x1p64};                  \
    const double magic = 0x1.8p52;                                                 \
    int64_t magicBits;                                                             \
    memcpy(&magicBits, &magic, sizeof magicBits);                                  \
    for (size_t i = 0; i < count; i++) {                                           \
        double r = values[i];                                                      \
        const int ok = (r < 0x1p94) & (-r < 0x1p94); /* 0 for NaN and ±inf */      \
        r = ok ? r : 0.0;                                                          \
        acc[5 * count + i] += 1 - ok;                                              \
        for (int d = 4; d >= 0; d--) {                                             \
            const double q = r * down[d] + magic;                                  \
            int64_t bits;                                                          \
            memcpy(&bits, &q, sizeof bits);                                        \
            acc[(size_t)d * count + i] += bits - magicBits;                        \
            r -= (q - magic) * up[d];                                              \
        }                                                                          \
    }

LEVELED_KERNEL(lockstep_exact_add_columns, exact_columns, EXACT_COLUMNS, (values, count, acc))

#define POOL_ARGS const float *restrict src, size_t w, size_t ho, size_t wo, float *restrict dst, int *restrict idx
#define POOL_BODY                                                                  \
    for (size_t oh = 0; oh < ho; oh++) {                                           \
        const float *r0 = src + 2 * oh * w, *r1 = r0 + w;                          \
        const int base = (int)(2 * oh * w);                                        \
        float *out = dst + oh * wo;                                                \
        int *at = idx + oh * wo;                                                   \
        for (size_t ow = 0; ow < wo; ow++) {                                       \
            const int i = base + 2 * (int)ow;                                      \
            float best = r0[2 * ow];                                               \
            int bi = i;                                                            \
            const float b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];    \
            bi = b > best ? i + 1 : bi; best = b > best ? b : best;                \
            bi = c > best ? i + (int)w : bi; best = c > best ? c : best;           \
            bi = d > best ? i + (int)w + 1 : bi; best = d > best ? d : best;       \
            out[ow] = best;                                                        \
            at[ow] = bi;                                                           \
        }                                                                          \
    }
LEVELED_KERNEL(lockstep_maxpool2x2, pool, POOL, (src, w, ho, wo, dst, idx))
