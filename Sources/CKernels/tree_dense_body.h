// The body of the exact dense weight gradient (tree_dense.c), included once per instruction-set
// level with FN (the function's name), VL (floats per vector), R (weight rows per register
// tile), NV and ATTR defined. Every level forms every chunk sum with the same chain of fused
// multiply-adds in the same row order and adds the chunks in the same tree, so all levels give
// the same bits (tree_dense.c says why).
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NAME(s) CAT(FN, s)
typedef float NAME(_vf) __attribute__((ext_vector_type(VL)));

// Rows [0, rows) × columns [0, nv·VL) of one block's tree sum (chunks [first, first + count) of
// the batch), written to dst (row stride ld). Row r of the batch is dy[r·dys ...] (the tile's
// weight rows) and x[r·xs ...] (its columns): either the caller's arrays or the packed copies
// FN makes, which hold the same floats, so the same bits.
ATTR static inline __attribute__((always_inline))
void NAME(_tile)(const float *dy, size_t dys, const float *x, size_t xs, size_t n, size_t chunk,
                 int first, int count, float *dst, size_t ld, int rows, int nv) {
    NAME(_vf) stack[TREE_DEPTH][R][NV];
    int depth = 0;
    // The tile's lines of dst are fetched for writing now, to arrive while the chunks run: the
    // gradient buffer is usually cold, and waiting for it at the end cost the MLP's first layer
    // about 10% (Zen 4).
    for (int k = 0; k < rows; k++)
        for (int v = 0; v < nv; v++) __builtin_prefetch(dst + (size_t)k * ld + (size_t)v * VL, 1, 3);
    for (int t = 0; t < count; t++) {
        const size_t c0 = (size_t)(first + t) * chunk, c1 = c0 + chunk < n ? c0 + chunk : n;
        NAME(_vf) p[R][NV];
        for (int k = 0; k < R; k++) for (int v = 0; v < NV; v++) p[k][v] = (NAME(_vf))0;
        for (size_t r = c0; r < c1; r++) {
            NAME(_vf) xv[NV];
            for (int v = 0; v < nv; v++) __builtin_memcpy(&xv[v], x + r * xs + (size_t)v * VL, sizeof(NAME(_vf)));
            const float *d = dy + r * dys;
            for (int k = 0; k < rows; k++) {
                const NAME(_vf) b = (NAME(_vf))d[k];
                for (int v = 0; v < nv; v++) p[k][v] = __builtin_elementwise_fma(b, xv[v], p[k][v]);
            }
        }
        for (unsigned m = (unsigned)t; m & 1; m >>= 1) {   // one merge per trailing one bit of t
            --depth;
            for (int k = 0; k < rows; k++) for (int v = 0; v < nv; v++) p[k][v] = stack[depth][k][v] + p[k][v];
        }
        for (int k = 0; k < rows; k++) for (int v = 0; v < nv; v++) stack[depth][k][v] = p[k][v];
        depth++;
    }
    NAME(_vf) acc[R][NV];
    for (int k = 0; k < rows; k++) for (int v = 0; v < nv; v++) acc[k][v] = depth > 0 ? stack[depth - 1][k][v] : (NAME(_vf))0;
    for (int d = depth - 2; d >= 0; d--)
        for (int k = 0; k < rows; k++) for (int v = 0; v < nv; v++) acc[k][v] = stack[d][k][v] + acc[k][v];
    for (int k = 0; k < rows; k++)
        for (int v = 0; v < nv; v++) __builtin_memcpy(dst + (size_t)k * ld + (size_t)v * VL, &acc[k][v], sizeof(NAME(_vf)));
}

ATTR static void FN(const float *restrict dy, const float *restrict x, size_t n, size_t out, size_t in, size_t chunk,
                    int blocks, const int *first, const int *count, float *const *dst, float *restrict pack) {
    const size_t wide = in / (NV * VL) * (NV * VL), single = in / VL * VL, W = NV * VL;
    // Packed copies (the caller's scratch, lockstep_tree_dense_scratch floats): dY by tile of R
    // weight rows, each tile's rows of the batch contiguous (tiles × n × R), and one column
    // block of X (n × W). The kernel then reads both sequentially from few pages, where the
    // arrays themselves are strided by a row (2-3 KB) per batch row: a page per few rows, more
    // than the first-level TLB holds.
    const size_t tiles = out / R;
    float *dyp = pack, *xp = pack + tiles * n * R;
    for (size_t r = 0; r < n; r++)
        for (size_t t = 0; t < tiles; t++) __builtin_memcpy(dyp + (t * n + r) * R, dy + r * out + t * R, R * sizeof(float));
    for (int b = 0; b < blocks; b++) {
        // Column blocks outermost: the block's rows of X in these columns (rows × W floats,
        // packed) stay in L1 while every tile of weight rows passes over them, and dY is what
        // streams from L2. Each tile also prefetches its share of the next column block's rows
        // of X, which the loader wrote long before and which are usually out of the caches.
        const size_t lo = (size_t)first[b] * chunk, hiChunks = (size_t)(first[b] + count[b]) * chunk;
        const size_t hi = hiChunks < n ? hiChunks : n;
        const size_t share = tiles ? (hi - lo + tiles - 1) / tiles : 0;
        for (size_t i0 = 0; i0 < wide; i0 += W) {
            for (size_t r = lo; r < hi; r++) __builtin_memcpy(xp + r * W, x + r * in + i0, W * sizeof(float));
            for (size_t t = 0; t < tiles; t++) {
                for (size_t r = lo + t * share; r < lo + (t + 1) * share && r < hi; r++)
                    for (size_t i = i0 + W; i < i0 + 2 * W && i < in; i += VL)
                        __builtin_prefetch(x + r * in + i, 0, 3);
                NAME(_tile)(dyp + t * n * R, R, xp, W, n, chunk, first[b], count[b], dst[b] + t * R * in + i0, in, R, NV);
            }
            for (size_t o0 = tiles * R; o0 < out; o0++)   // rows left over
                NAME(_tile)(dy + o0, out, xp, W, n, chunk, first[b], count[b], dst[b] + o0 * in + i0, in, 1, NV);
        }
        for (size_t i0 = wide; i0 < single; i0 += VL) {
            for (size_t t = 0; t < tiles; t++)
                NAME(_tile)(dyp + t * n * R, R, x + i0, in, n, chunk, first[b], count[b], dst[b] + t * R * in + i0, in, R, 1);
            for (size_t o0 = tiles * R; o0 < out; o0++)
                NAME(_tile)(dy + o0, out, x + i0, in, n, chunk, first[b], count[b], dst[b] + o0 * in + i0, in, 1, 1);
        }
        // Columns past the last whole vector: the same chains and tree, one element at a time.
        for (size_t o = 0; o < out; o++)
            for (size_t i = single; i < in; i++) {
                float stack[TREE_DEPTH];
                int depth = 0;
                for (int t = 0; t < count[b]; t++) {
                    const size_t c0 = (size_t)(first[b] + t) * chunk, c1 = c0 + chunk < n ? c0 + chunk : n;
                    float p = 0;
                    for (size_t r = c0; r < c1; r++) p = __builtin_fmaf(dy[r * out + o], x[r * in + i], p);
                    for (unsigned m = (unsigned)t; m & 1; m >>= 1) p = stack[--depth] + p;
                    stack[depth++] = p;
                }
                float acc = depth > 0 ? stack[depth - 1] : 0;
                for (int d = depth - 2; d >= 0; d--) acc = stack[d] + acc;
                dst[b][o * in + i] = acc;
            }
    }
}

#undef NAME
#undef CAT
#undef CAT_
