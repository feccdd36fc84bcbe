// The body of the row-wise GEMM (rowwise.c), included once per instruction-set level with FN,
// VL (floats per vector), R (rows per register tile), NV (vectors per row) and ATTR defined.
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NAME(s) CAT(FN, s)
typedef float NAME(_vf) __attribute__((ext_vector_type(VL)));

// Rows [m0, m0+rows) × columns [j0, j0 + nv·VL) of C: each element an FMA chain over k.
ATTR static inline __attribute__((always_inline))
void NAME(_tile)(const float *a, size_t lda, const float *b, size_t ldb, size_t k, float *c, size_t ldc,
                 size_t m0, int rows, size_t j0, int nv) {
    NAME(_vf) p[R][NV];
    for (int r = 0; r < R; r++) for (int v = 0; v < NV; v++) p[r][v] = (NAME(_vf))0;
    for (size_t t = 0; t < k; t++) {
        NAME(_vf) bv[NV];
        for (int v = 0; v < nv; v++) __builtin_memcpy(&bv[v], b + t * ldb + j0 + (size_t)v * VL, sizeof(NAME(_vf)));
        for (int r = 0; r < rows; r++) {
            const NAME(_vf) s = (NAME(_vf))a[(m0 + (size_t)r) * lda + t];
            for (int v = 0; v < nv; v++) p[r][v] = __builtin_elementwise_fma(s, bv[v], p[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) __builtin_memcpy(c + (m0 + (size_t)r) * ldc + j0 + (size_t)v * VL, &p[r][v], sizeof(NAME(_vf)));
}

ATTR static void FN(const float *restrict a, size_t lda, const float *restrict b, size_t ldb,
                    size_t m, size_t n, size_t k, float *restrict c, size_t ldc) {
    const size_t wide = n / (NV * VL) * (NV * VL), single = n / VL * VL;
    // Column blocks outermost, so that B's panel (k × NV·VL floats) stays in cache over all rows.
    // (Constant tile shapes in each call, so that the partial sums stay in registers.)
    for (size_t j0 = 0; j0 < wide; j0 += NV * VL) {
        size_t m0 = 0;
        for (; m0 + R <= m; m0 += R) NAME(_tile)(a, lda, b, ldb, k, c, ldc, m0, R, j0, NV);
        for (; m0 < m; m0++) NAME(_tile)(a, lda, b, ldb, k, c, ldc, m0, 1, j0, NV);
    }
    for (size_t j0 = wide; j0 < single; j0 += VL) {
        size_t m0 = 0;
        for (; m0 + R <= m; m0 += R) NAME(_tile)(a, lda, b, ldb, k, c, ldc, m0, R, j0, 1);
        for (; m0 < m; m0++) NAME(_tile)(a, lda, b, ldb, k, c, ldc, m0, 1, j0, 1);
    }
    if (single < n) {
        // Columns past the last whole vector: B's last columns, padded with zeros to one vector
        // (a zero term leaves a chain's sum unchanged, so the lanes in use get the same bits).
        const size_t rest = n - single;
        float *panel = (float *)calloc(k * VL, sizeof(float));
        float tmp[R * VL];
        for (size_t t = 0; t < k; t++)
            for (size_t j = 0; j < rest; j++) panel[t * VL + j] = b[t * ldb + single + j];
        for (size_t m0 = 0; m0 < m;) {
            const int rows = m0 + R <= m ? R : 1;
            if (rows == R) NAME(_tile)(a + m0 * lda, lda, panel, VL, k, tmp, VL, 0, R, 0, 1);
            else NAME(_tile)(a + m0 * lda, lda, panel, VL, k, tmp, VL, 0, 1, 0, 1);
            for (int r = 0; r < rows; r++)
                for (size_t j = 0; j < rest; j++) c[(m0 + (size_t)r) * ldc + single + j] = tmp[r * VL + j];
            m0 += (size_t)rows;
        }
        free(panel);
    }
}
#undef NAME
#undef CAT
#undef CAT_
