// CKernels: batch norm over channel planes (declared in CKernels.h; per-level bodies in
// norm_body.h): one read pass for a plane's moments, one read-write pass that normalises and
// applies the ReLU, and the backward pass's two (sums, then the input gradient), with x̂
// recomputed from x instead of stored; and the same four with a ReLU and a 2×2 max pool fused in
// (one plane in, the pooled plane out, the separate layers' bits).
//
// Every sum runs in 16 float lanes whatever the vector width (an ext_vector_type(16) is two
// AVX2 or four SSE registers), the lanes are added in one fixed tree and the tail elements after
// that in order, so every level gives the same bits.
#include "CKernels.h"

#define PREFIX norm
#define BODY "norm_body.h"
#include "kernel_levels.h"
#undef PREFIX
#undef BODY

#if defined(__x86_64__) && defined(__clang__)
#define NORM_DISPATCH(name, ...)                                                  \
    if (level < 0) level = lockstep_kernel_level();                              \
    if (level == 2) { norm_avx512##name(__VA_ARGS__); return; }                  \
    if (level == 1) { norm_avx2##name(__VA_ARGS__); return; }                    \
    norm_baseline##name(__VA_ARGS__)
#else
#define NORM_DISPATCH(name, ...) (void)level; norm_baseline##name(__VA_ARGS__)
#endif

void lockstep_plane_moments(int level, const float *x, size_t n, float shift, float out[2]) {
    NORM_DISPATCH(_moments, x, n, shift, out);
}

void lockstep_bn_forward(int level, const float *x, float *y, size_t n, float mean, float inv, float gamma,
                         float beta, int relu) {
    NORM_DISPATCH(_forward, x, y, n, mean, inv, gamma, beta, relu);
}

void lockstep_bn_gradient_sums(int level, const float *dy, const float *x, const float *mask, size_t n,
                               float mean, float inv, float out[2]) {
    NORM_DISPATCH(_sums, dy, x, mask, n, mean, inv, out);
}

void lockstep_bn_input_gradient(int level, const float *dy, const float *x, const float *mask, float *dx,
                                size_t n, float mean, float inv, float k, float a, float b) {
    NORM_DISPATCH(_dx, dy, x, mask, dx, n, mean, inv, k, a, b);
}

void lockstep_bn_forward_pool(int level, const float *x, size_t h, size_t w, float mean, float inv, float gamma,
                              float beta, float *scratch, float *out, unsigned char *code, float *xmax) {
    NORM_DISPATCH(_forward_pool, x, h, w, mean, inv, gamma, beta, scratch, out, code, xmax);
}

void lockstep_bn_pool_gradient_sums(int level, const float *gp, const unsigned char *code, const float *xmax,
                                    size_t h, size_t w, float mean, float inv, float *scratch, float out[2]) {
    NORM_DISPATCH(_pool_sums, gp, code, xmax, h, w, mean, inv, scratch, out);
}

void lockstep_bn_pool_input_gradient(int level, const float *gp, const unsigned char *code, const float *x,
                                     float *dx, size_t h, size_t w, float mean, float inv, float k, float a,
                                     float b, float *scratch) {
    NORM_DISPATCH(_pool_dx, gp, code, x, dx, h, w, mean, inv, k, a, b, scratch);
}

size_t lockstep_bn_pool_scratch_floats(size_t h, size_t w) {
    const size_t n = h * w, no = (h / 2) * (w / 2);
    return 2 * (n + 16) + 2 * (no + 8) + (no + 8 + 3) / 4;
}
