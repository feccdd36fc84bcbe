// The body of the exact dense weight gradient (fixed_dense.c), included once per instruction-set
// level with FN (the function's name), VL (floats per vector), R (weight rows per register
// tile) and ATTR (the target attribute) defined. Every level computes every partial sum with the
// same chain of fused multiply-adds in the same row order and rounds it the same way, so all
// levels give the same bits (fixed_dense.c says why that holds).
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NAME(s) CAT(FN, s)
typedef float NAME(_vf) __attribute__((ext_vector_type(VL)));
typedef double NAME(_vd) __attribute__((ext_vector_type(VL)));
typedef long long NAME(_vi) __attribute__((ext_vector_type(VL)));

// Quantises one vector of partial sums into acc[0..<VL] (unaligned), tracking max |p| and NaN/inf.
ATTR static inline __attribute__((always_inline))
void NAME(_quantize)(NAME(_vf) p, long long *acc, double scale, NAME(_vf) *maxAbs, NAME(_vf) *bad, int measure) {
    const NAME(_vf) a = __builtin_elementwise_abs(p);
    *maxAbs = __builtin_elementwise_max(*maxAbs, a);
    *bad += p - p;   // 0 for finite values, NaN otherwise
    if (measure) return;
    const NAME(_vd) t = __builtin_convertvector(p, NAME(_vd)) * scale + MAGIC;
    NAME(_vi) q;
    __builtin_memcpy(&q, &t, sizeof q);
    NAME(_vi) old;
    __builtin_memcpy(&old, acc, sizeof old);
    old += q - MAGIC_BITS;
    __builtin_memcpy(acc, &old, sizeof old);
}

// Rows [o0, o0+rows) of the weight gradient, columns [i0, i0 + nv·VL), every chunk.
ATTR static inline __attribute__((always_inline))
void NAME(_tile)(const float *dy, const float *x, size_t n, size_t out, size_t in, size_t chunk,
               size_t o0, int rows, size_t i0, int nv, long long *acc, double scale,
               NAME(_vf) *maxAbs, NAME(_vf) *bad, int measure) {
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
        const size_t c1 = c0 + chunk < n ? c0 + chunk : n;
        NAME(_vf) p[R][NV];
        for (int k = 0; k < R; k++) for (int v = 0; v < NV; v++) p[k][v] = (NAME(_vf))0;
        for (size_t r = c0; r < c1; r++) {
            NAME(_vf) xv[NV];
            for (int v = 0; v < nv; v++) __builtin_memcpy(&xv[v], x + r * in + i0 + (size_t)v * VL, sizeof(NAME(_vf)));
            const float *d = dy + r * out + o0;
            for (int k = 0; k < rows; k++) {
                const NAME(_vf) b = (NAME(_vf))d[k];
                for (int v = 0; v < nv; v++) p[k][v] = __builtin_elementwise_fma(b, xv[v], p[k][v]);
            }
        }
        for (int k = 0; k < rows; k++)
            for (int v = 0; v < nv; v++)
                NAME(_quantize)(p[k][v], acc + (o0 + (size_t)k) * in + i0 + (size_t)v * VL, scale, maxAbs, bad, measure);
    }
}

ATTR static void FN(const float *restrict dy, const float *restrict x, size_t n, size_t out, size_t in, size_t chunk,
                    long long *restrict acc, int exponent, float *maxAbsOut, int *nonFinite) {
    const int measure = acc == 0;
    const double scale = ldexp(1.0, exponent);
    NAME(_vf) maxAbs = (NAME(_vf))0, bad = (NAME(_vf))0;
    const size_t wide = in / (NV * VL) * (NV * VL), single = in / VL * VL;
    size_t o0 = 0;
    for (; o0 + R <= out; o0 += R) {
        for (size_t i0 = 0; i0 < wide; i0 += NV * VL)
            NAME(_tile)(dy, x, n, out, in, chunk, o0, R, i0, NV, acc, scale, &maxAbs, &bad, measure);
        for (size_t i0 = wide; i0 < single; i0 += VL)
            NAME(_tile)(dy, x, n, out, in, chunk, o0, R, i0, 1, acc, scale, &maxAbs, &bad, measure);
    }
    for (; o0 < out; o0++) {   // the rows left over: one at a time
        for (size_t i0 = 0; i0 < wide; i0 += NV * VL)
            NAME(_tile)(dy, x, n, out, in, chunk, o0, 1, i0, NV, acc, scale, &maxAbs, &bad, measure);
        for (size_t i0 = wide; i0 < single; i0 += VL)
            NAME(_tile)(dy, x, n, out, in, chunk, o0, 1, i0, 1, acc, scale, &maxAbs, &bad, measure);
    }
    float m = 0;
    for (int l = 0; l < VL; l++) { m = maxAbs[l] > m ? maxAbs[l] : m; if (bad[l] != 0 || bad[l] != bad[l]) *nonFinite = 1; }
    // Columns past the last whole vector: the same chain, one element at a time.
    for (size_t o = 0; o < out; o++)
        for (size_t i = single; i < in; i++)
            for (size_t c0 = 0; c0 < n; c0 += chunk) {
                const size_t c1 = c0 + chunk < n ? c0 + chunk : n;
                float p = 0;
                for (size_t r = c0; r < c1; r++) p = __builtin_fmaf(dy[r * out + o], x[r * in + i], p);
                if (!(__builtin_fabsf(p) <= 3.40282347e38f)) *nonFinite = 1; else if (__builtin_fabsf(p) > m) m = __builtin_fabsf(p);
                if (!measure) {
                    const double t = (double)p * scale + MAGIC;
                    long long q;
                    __builtin_memcpy(&q, &t, sizeof q);
                    acc[o * in + i] += q - MAGIC_BITS;
                }
            }
    if (m > *maxAbsOut) *maxAbsOut = m;
}

#undef NAME
#undef CAT
#undef CAT_
