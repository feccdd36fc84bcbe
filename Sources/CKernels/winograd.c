// CKernels: Winograd F(2×2, 3×3) and F(4×4, 3×3) transforms for 3×3 stride-1 convolutions
// (declared in CKernels.h; the per-level bodies are in winograd_body.h).
//
// Layout: channels innermost. A sample's input is packed into a zero-padded (hp, wp, c) buffer,
// each α×α tile (α = m + 2) is transformed with all its channels as one vector per element, and
// the transformed tiles form α² matrices (tiles × channels): one GEMM per element with the
// transformed weights (channels × outputs) gives α² matrices (tiles × outputs), transformed
// back into (m × m) output tiles. Vectors over channels stay full for every plane size (the
// ResNet's 7×7 planes have 4 tiles of 4×4), which vectors over tiles would not.
//
// Every transform is a fixed sequence of IEEE additions and multiplications by small integers
// (no fused multiply-add: -ffp-contract=off), written once and used by the vector and scalar
// paths alike, so every level gives the same bits. The weight transform (G g Gᵀ, with thirds
// and sixths) is computed in double and rounded once.
#include "CKernels.h"
#include <string.h>

#define PREFIX winograd
#define BODY "winograd_body.h"
#include "kernel_levels.h"
#undef PREFIX
#undef BODY

// Calls winograd_<level>_<fn>(...) for the level asked (−1: the best this CPU runs); WG_TILED
// picks fn's F(4,3) or F(2,3) body by m.
#if defined(__x86_64__) && defined(__clang__)
#define WG_DISPATCH(fn, ...)                                                           \
    do {                                                                               \
        if (level < 0) level = lockstep_kernel_level();                                \
        if (level == 2) winograd_avx512_##fn(__VA_ARGS__);                             \
        else if (level == 1) winograd_avx2_##fn(__VA_ARGS__);                          \
        else winograd_baseline_##fn(__VA_ARGS__);                                      \
    } while (0)
#else
#define WG_DISPATCH(fn, ...) do { (void)level; winograd_baseline_##fn(__VA_ARGS__); } while (0)
#endif
#define WG_TILED(fn, ...) do { if (m == 4) WG_DISPATCH(fn##4, __VA_ARGS__); else WG_DISPATCH(fn##2, __VA_ARGS__); } while (0)

#define WG_ARGS_IN const float *p, size_t wp, size_t c, size_t th, size_t tw, float *v, size_t ldx
#define WG_ARGS_OUT const float *mm, size_t ldx, size_t k, size_t th, size_t tw, float *q, size_t wq

void lockstep_winograd_input(int level, int m, WG_ARGS_IN) {
    WG_TILED(in, p, wp, c, th, tw, v, ldx);
}

void lockstep_winograd_output(int level, int m, WG_ARGS_OUT) {
    WG_TILED(out, mm, ldx, k, th, tw, q, wq);
}

void lockstep_winograd_gradient_tiles(int level, int m, const float *p, size_t wp, size_t k, size_t th, size_t tw,
                                      float *v, size_t ldx) {
    WG_TILED(grad, p, wp, k, th, tw, v, ldx);
}

void lockstep_winograd_pack(int level, const float *restrict x, size_t c, size_t h, size_t w, size_t pad,
                            size_t hp, size_t wp, float *restrict p) {
    // Zero the rows above and below the image, and the columns left and right of it.
    memset(p, 0, pad * wp * c * sizeof(float));
    const size_t below = pad + h < hp ? pad + h : hp;
    memset(p + below * wp * c, 0, (hp - below) * wp * c * sizeof(float));
    for (size_t r = pad; r < below; r++) {
        memset(p + r * wp * c, 0, pad * c * sizeof(float));
        memset(p + (r * wp + pad + w) * c, 0, (wp - pad - w) * c * sizeof(float));
    }
    WG_DISPATCH(pack, x, c, h, w, pad, wp, p);
}

void lockstep_winograd_unpack(int level, const float *restrict q, size_t wq, size_t k, size_t ho, size_t wo,
                              float *restrict y) {
    WG_DISPATCH(unpack, q, wq, k, ho, wo, y);
}

// G (α × 3) for each tile size (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
// Networks", with interpolation points 0, ±1, ∞ and 0, ±1, ±2, ∞).
static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double G4[6][3] = {{1.0 / 4, 0, 0},
                                {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                {0, 0, 1}};

/// coef[ξ = (e, f)][t = (y, x)] = G[e][y]·G[f][x], for tile m.
static void coefficients(int m, double coef[36 * 9]) {
    const int a = m + 2;
    const double *G = m == 4 ? &G4[0][0] : &G2[0][0];
    for (int e = 0; e < a; e++)
        for (int f = 0; f < a; f++)
            for (int y = 0; y < 3; y++)
                for (int x = 0; x < 3; x++) coef[(e * a + f) * 9 + y * 3 + x] = G[e * 3 + y] * G[f * 3 + x];
}

void lockstep_winograd_weights(int level, int m, const float *w, size_t k, size_t c, int flip, float *u) {
    double coef[36 * 9];
    coefficients(m, coef);
    WG_DISPATCH(weights, m + 2, coef, w, k, c, flip, u);
}

void lockstep_winograd_weight_gradient(int level, int m, const float *du, size_t k, size_t c, float *dw) {
    double coef[36 * 9];
    coefficients(m, coef);
    WG_DISPATCH(wgrad, m + 2, coef, du, k, c, dw);
}
