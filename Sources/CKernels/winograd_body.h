// The body of the Winograd transforms (winograd.c), included once per instruction-set level
// with FN, VL and ATTR defined. Each transform is a macro over its element type, so the vector
// path (VL channels at once) and the scalar path (the channels past the last whole vector) run
// the same operations in the same order.
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NAME(s) CAT(FN, s)
typedef float NAME(_vf) __attribute__((ext_vector_type(VL)));

#ifndef WG_TRANSFORMS
#define WG_TRANSFORMS
// Bᵀd for F(2,3): rows [1 0 −1 0], [0 1 1 0], [0 −1 1 0], [0 1 0 −1].
#define WG_IN2(T, o, d) do { o[0] = d[0] - d[2]; o[1] = d[1] + d[2]; o[2] = d[2] - d[1]; o[3] = d[1] - d[3]; } while (0)
// Bᵀd for F(4,3): rows [4 0 −5 0 1 0], [0 −4 −4 1 1 0], [0 4 −4 −1 1 0], [0 −2 −1 2 1 0],
// [0 2 −1 −2 1 0], [0 4 0 −5 0 1].
#define WG_IN4(T, o, d) do {                                              \
        const T s42 = d[4] - d[2], s31 = d[3] - d[1];                      \
        o[0] = (4.0f * d[0] - 5.0f * d[2]) + d[4];                         \
        o[1] = (d[3] + d[4]) - 4.0f * (d[1] + d[2]);                       \
        o[2] = (d[4] - d[3]) + 4.0f * (d[1] - d[2]);                       \
        o[3] = s42 + 2.0f * s31;                                           \
        o[4] = s42 - 2.0f * s31;                                           \
        o[5] = (4.0f * d[1] - 5.0f * d[3]) + d[5];                         \
    } while (0)
// Aᵀm for F(2,3): rows [1 1 1 0], [0 1 −1 −1].
#define WG_OUT2(T, o, s) do { o[0] = (s[0] + s[1]) + s[2]; o[1] = (s[1] - s[2]) - s[3]; } while (0)
// Aᵀm for F(4,3): rows [1 1 1 1 1 0], [0 1 −1 2 −2 0], [0 1 1 4 4 0], [0 1 −1 8 −8 1].
#define WG_OUT4(T, o, s) do {                                             \
        const T a = s[1] + s[2], b = s[1] - s[2], c = s[3] + s[4], d = s[3] - s[4]; \
        o[0] = (s[0] + a) + c;                                             \
        o[1] = b + 2.0f * d;                                               \
        o[2] = a + 4.0f * c;                                               \
        o[3] = (b + 8.0f * d) + s[5];                                      \
    } while (0)
// A·d for the weight gradient's output tiles, m → α values (A = the output transform's
// transpose). F(2,3): rows [1 0], [1 1], [1 −1], [0 −1].
#define WG_GIN2(T, o, d) do { o[0] = d[0]; o[1] = d[0] + d[1]; o[2] = d[0] - d[1]; o[3] = -d[1]; } while (0)
// F(4,3): rows [1 0 0 0], [1 1 1 1], [1 −1 1 −1], [1 2 4 8], [1 −2 4 −8], [0 0 0 1].
#define WG_GIN4(T, o, d) do {                                             \
        const T e = d[0] + d[2], f = d[1] + d[3];                          \
        const T g = d[0] + 4.0f * d[2], h = 2.0f * d[1] + 8.0f * d[3];     \
        o[0] = d[0]; o[1] = e + f; o[2] = e - f; o[3] = g + h; o[4] = g - h; o[5] = d[3]; \
    } while (0)
#endif

// A separable 2-D transform D×D → A×A of one tile for lanes [c0, c0 + lanes of T): XFORM (a 1-D
// transform D → A) on each of the D rows read at base (row stride wp, channel stride ch), then on
// each of the A columns, stored as the A² rows of `out` (stride ldx). The input transform is
// D = α with Bᵀ (WG_IN), the weight gradient's output-gradient tiles D = m with A (WG_GIN).
#define WG_TILE_2D(T, D, A, XFORM, ch, LOAD, STORE)                                           \
    do {                                                                                     \
        T rt[D][A];                                                                          \
        for (int i = 0; i < D; i++) {                                                        \
            T d[D];                                                                          \
            for (int x = 0; x < D; x++) d[x] = LOAD(base + ((size_t)i * wp + (size_t)x) * ch + c0); \
            XFORM(T, rt[i], d);                                                              \
        }                                                                                    \
        for (int x = 0; x < A; x++) {                                                        \
            T d[D], o[A];                                                                    \
            for (int i = 0; i < D; i++) d[i] = rt[i][x];                                     \
            XFORM(T, o, d);                                                                  \
            for (int y = 0; y < A; y++) STORE(out + (size_t)(y * A + x) * ldx + c0, o[y]);   \
        }                                                                                    \
    } while (0)

#define WG_OUT_TILE(T, A, M, LOAD, STORE)                                                    \
    do {                                                                                     \
        T rt[A][M];                                                                          \
        for (int y = 0; y < A; y++) {                                                        \
            T s[A];                                                                          \
            for (int x = 0; x < A; x++) s[x] = LOAD(in + (size_t)(y * A + x) * ldx + k0);    \
            CAT(WG_OUT, M)(T, rt[y], s);                        \
        }                                                                                    \
        for (int x = 0; x < M; x++) {                                                        \
            T s[A], o[M];                                                                    \
            for (int y = 0; y < A; y++) s[y] = rt[y][x];                                     \
            CAT(WG_OUT, M)(T, o, s);                                \
            for (int i = 0; i < M; i++) STORE(dst + ((size_t)i * wq + (size_t)x) * k + k0, o[i]); \
        }                                                                                    \
    } while (0)

#define WG_VLOAD(ptr) ({ NAME(_vf) _v; __builtin_memcpy(&_v, (ptr), sizeof _v); _v; })
#define WG_VSTORE(ptr, val) do { NAME(_vf) _v = (val); __builtin_memcpy((ptr), &_v, sizeof _v); } while (0)
#define WG_SLOAD(ptr) (*(ptr))
#define WG_SSTORE(ptr, val) (*(ptr) = (val))

// The input transform (α×α tiles from a packed (hp, wp, c) buffer: D = α) and the weight
// gradient's output-gradient tiles (m×m tiles from a packed (th·m, wp, c) buffer: D = m): tiles
// m apart, channels in vectors of VL and then one by one.
#define WG_TILES_FN(NAMEPART, D, M, A, XFORM)                                                \
ATTR static void NAME(NAMEPART)(const float *p, size_t wp, size_t c, size_t th, size_t tw,   \
                                float *v, size_t ldx) {                                     \
    for (size_t ty = 0; ty < th; ty++)                                                       \
        for (size_t tx = 0; tx < tw; tx++) {                                                 \
            const float *base = p + ((ty * M) * wp + tx * M) * c;                            \
            float *out = v + (ty * tw + tx) * c;                                             \
            size_t c0 = 0;                                                                   \
            for (; c0 + VL <= c; c0 += VL) WG_TILE_2D(NAME(_vf), D, A, XFORM, c, WG_VLOAD, WG_VSTORE); \
            for (; c0 < c; c0++) WG_TILE_2D(float, D, A, XFORM, c, WG_SLOAD, WG_SSTORE);     \
        }                                                                                    \
}

#define WG_OUTPUT_FN(M, A)                                                                   \
ATTR static void NAME(CAT(_out, M))(const float *mm, size_t ldx, size_t k, size_t th, size_t tw, \
                                    float *q, size_t wq) {                                  \
    for (size_t ty = 0; ty < th; ty++)                                                       \
        for (size_t tx = 0; tx < tw; tx++) {                                                 \
            const float *in = mm + (ty * tw + tx) * k;                                       \
            float *dst = q + ((ty * M) * wq + tx * M) * k;                                   \
            size_t k0 = 0;                                                                   \
            for (; k0 + VL <= k; k0 += VL) WG_OUT_TILE(NAME(_vf), A, M, WG_VLOAD, WG_VSTORE); \
            for (; k0 < k; k0++) WG_OUT_TILE(float, A, M, WG_SLOAD, WG_SSTORE);              \
        }                                                                                    \
}

// 8 × 8 transposes for packing and unpacking (copies: every level gives the same bits).
typedef float NAME(_f8) __attribute__((ext_vector_type(8)));
ATTR static inline __attribute__((always_inline)) void NAME(_tr8)(NAME(_f8) r[8]) {
    NAME(_f8) t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4)
        for (int j = 0; j < 2; j++) {
            u[i + j] = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + j + 2] = __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    // u[0]: rows 0-3 of columns 0, 4 (lanes 0-3 | 4-7); u[4]: rows 4-7. Order: u0 c0/c4, u2 c1/c5,
    // u1 c2/c6, u3 c3/c7.
    const int order[4] = {0, 2, 1, 3};
    for (int j = 0; j < 4; j++) {
        const int a = order[j];
        r[j] = __builtin_shufflevector(u[a], u[a + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[j + 4] = __builtin_shufflevector(u[a], u[a + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

// x (c, h, w) → the interior of p (hp, wp, c): the plane is read as one flat run of h·w
// positions, 8 positions × 8 channels at a time, each transposed vector stored at its
// position's padded place.
ATTR static void NAME(_pack)(const float *restrict x, size_t c, size_t h, size_t w, size_t pad, size_t wp,
                             float *restrict p) {
    const size_t hw = h * w, c8 = c / 8 * 8;
    size_t dst[8];
    for (size_t q0 = 0; q0 < hw; q0 += 8) {
        const size_t n = q0 + 8 <= hw ? 8 : hw - q0;
        for (size_t j = 0; j < n; j++) dst[j] = (((q0 + j) / w + pad) * wp + (q0 + j) % w + pad) * c;
        size_t c0 = 0;
        if (n == 8)
            for (; c0 < c8; c0 += 8) {
                NAME(_f8) r[8];
                for (int i = 0; i < 8; i++) __builtin_memcpy(&r[i], x + (c0 + (size_t)i) * hw + q0, sizeof r[i]);
                NAME(_tr8)(r);
                for (int j = 0; j < 8; j++) __builtin_memcpy(p + dst[j] + c0, &r[j], sizeof r[j]);
            }
        for (; c0 < c; c0++)
            for (size_t j = 0; j < n; j++) p[dst[j] + c0] = x[c0 * hw + q0 + j];
    }
}

// q (rows, wq, k) → y (k, ho, wo), cropping: 8 output positions × 8 channels at a time.
ATTR static void NAME(_unpack)(const float *restrict q, size_t wq, size_t k, size_t ho, size_t wo,
                               float *restrict y) {
    const size_t hw = ho * wo, k8 = k / 8 * 8;
    size_t src[8];
    for (size_t q0 = 0; q0 < hw; q0 += 8) {
        const size_t n = q0 + 8 <= hw ? 8 : hw - q0;
        for (size_t j = 0; j < n; j++) src[j] = ((q0 + j) / wo * wq + (q0 + j) % wo) * k;
        size_t k0 = 0;
        if (n == 8)
            for (; k0 < k8; k0 += 8) {
                NAME(_f8) r[8];
                for (int j = 0; j < 8; j++) __builtin_memcpy(&r[j], q + src[j] + k0, sizeof r[j]);
                NAME(_tr8)(r);
                for (int i = 0; i < 8; i++) __builtin_memcpy(y + (k0 + (size_t)i) * hw + q0, &r[i], sizeof r[i]);
            }
        for (; k0 < k; k0++)
            for (size_t j = 0; j < n; j++) y[k0 * hw + q0 + j] = q[src[j] + k0];
    }
}

// The weight transforms, as vectors of double over blocks of (output, input) channel pairs.
// u[ξ] = Σ_t coef[ξ][t]·g[t] over the 9 taps (coef[ξ][t] = G[e][y]·G[f][x], zeros skipped), and
// dw[t] += Σ_ξ coef[ξ][t]·dU[ξ], each sum in double in a fixed order and rounded once.
#define WG_BLOCK 64
ATTR static void NAME(_weights)(int a, const double *coef, const float *w, size_t k, size_t c, int flip, float *u) {
    double gt[9][WG_BLOCK], acc[WG_BLOCK];
    const size_t outer = flip ? k : c, inner = flip ? c : k;   // u[ξ] is (outer × inner)
    for (size_t r = 0; r < outer; r++)
        for (size_t j0 = 0; j0 < inner; j0 += WG_BLOCK) {
            const size_t n = j0 + WG_BLOCK <= inner ? WG_BLOCK : inner - j0;
            for (size_t j = 0; j < n; j++) {
                // flip: row r is output channel o, column j input channel i, taps rotated.
                const float *g = flip ? w + (r * c + j0 + j) * 9 : w + ((j0 + j) * c + r) * 9;
                for (int t = 0; t < 9; t++) gt[t][j] = (double)g[flip ? 8 - t : t];
            }
            for (int e = 0; e < a * a; e++) {
                for (size_t j = 0; j < n; j++) acc[j] = 0;
                for (int t = 0; t < 9; t++) {
                    const double cf = coef[e * 9 + t];
                    if (cf == 0) continue;
                    for (size_t j = 0; j < n; j++) acc[j] += cf * gt[t][j];
                }
                float *dst = u + (size_t)e * k * c + r * inner + j0;
                for (size_t j = 0; j < n; j++) dst[j] = (float)acc[j];
            }
        }
}

ATTR static void NAME(_wgrad)(int a, const double *coef, const float *du, size_t k, size_t c, float *dw) {
    double acc[9][WG_BLOCK];
    for (size_t i = 0; i < c; i++)
        for (size_t o0 = 0; o0 < k; o0 += WG_BLOCK) {
            const size_t n = o0 + WG_BLOCK <= k ? WG_BLOCK : k - o0;
            for (int t = 0; t < 9; t++)
                for (size_t j = 0; j < n; j++) acc[t][j] = 0;
            for (int e = 0; e < a * a; e++) {
                const float *src = du + (size_t)e * c * k + i * k + o0;
                for (int t = 0; t < 9; t++) {
                    const double cf = coef[e * 9 + t];
                    if (cf == 0) continue;
                    for (size_t j = 0; j < n; j++) acc[t][j] += cf * (double)src[j];
                }
            }
            for (size_t j = 0; j < n; j++) {
                float *g = dw + ((o0 + j) * c + i) * 9;
                for (int t = 0; t < 9; t++) g[t] += (float)acc[t][j];
            }
        }
}

WG_TILES_FN(_grad2, 2, 2, 4, WG_GIN2)
WG_TILES_FN(_grad4, 4, 4, 6, WG_GIN4)
WG_TILES_FN(_in2, 4, 2, 4, WG_IN2)
WG_TILES_FN(_in4, 6, 4, 6, WG_IN4)
WG_OUTPUT_FN(2, 4)
WG_OUTPUT_FN(4, 6)

#undef WG_TILES_FN
#undef WG_TILE_2D
#undef WG_OUTPUT_FN
#undef WG_OUT_TILE
#undef WG_VLOAD
#undef WG_VSTORE
#undef WG_SLOAD
#undef WG_SSTORE
#undef NAME
