// CKernels: elementwise loops that Swift cannot vectorise, written in C and compiled with
// -ffp-contract=off (no fused multiply-add: every product and sum is rounded as written, so the
// bits do not depend on the CPU) and -fno-math-errno (sqrtf becomes a vector instruction).
// Each kernel is built for AVX-512, AVX2 and baseline x86-64; the widest the CPU runs is chosen
// on first use. IEEE add, multiply, divide and square root round the same in every variant.
#ifndef LOCKSTEP_CKERNELS_H
#define LOCKSTEP_CKERNELS_H
#include <stddef.h>
#include <stdint.h>

/// Instruction-set levels of the kernels: 0 baseline, 1 AVX2, 2 AVX-512F.
int lockstep_kernel_level(void);
/// Whether this CPU runs level `level` (tests compare every level it runs).
int lockstep_kernel_level_supported(int level);
/// The name of a level, for logs and benchmarks.
const char *lockstep_kernel_level_name(int level);

/// Clears the upper halves of the vector registers (vzeroupper) when the CPU has AVX. OpenBLAS's
/// AVX-512 kernels (SkylakeX, Cooperlake) return with them dirty, and every legacy-SSE
/// instruction after that (Swift's own loops are SSE) then pays a merge penalty: batch norm's
/// forward pass on the MLP took 0.76 ms instead of 0.03 ms after a Cooperlake sgemm.
void lockstep_clear_upper_state(void);

/// Sets the calling thread's nice value (Linux; 0 on success, −1 elsewhere or on failure).
int lockstep_set_thread_nice(int nice);

/// ExactSum.addColumns at `level` (−1: the best this CPU runs): for each of `count` values, its
/// 5 digits go to acc[d·count + i] (d < 5) and its non-finite count to acc[5·count + i].
void lockstep_exact_add_columns(int level, const double *restrict values, size_t count, int64_t *restrict acc);

/// One Adam update over n elements, at `level` (−1: the best this CPU runs):
/// g' = g + l2·w; m = b1·m + (1−b1)·g'; v = b2·v + (1−b2)·g'²; w = w·shrink − stepSize·m / (√(v·invC2) + eps).
void lockstep_adam_step(int level, float *restrict w, const float *restrict g, float *restrict m, float *restrict v,
                        size_t n, float b1, float b2, float eps, float l2, float shrink, float stepSize, float invC2);

/// dst[0..<n] = src[0..<n] with streaming stores (not kept in the caches: a checkpoint's image);
/// lockstep_stream_fence() makes such stores visible before the memory is handed on.
void lockstep_stream_copy(int level, float *restrict dst, const float *restrict src, size_t n);
void lockstep_stream_fence(void);

/// 2×2 max pooling with stride 2 over one plane of width w: dst (ho×wo) gets each window's first
/// strictly greatest value in the order (0,0), (0,1), (1,0), (1,1), idx its index in the plane.
void lockstep_maxpool2x2(int level, const float *restrict src, size_t w, size_t ho, size_t wo,
                         float *restrict dst, int *restrict idx);

/// Exact mode's dense weight gradient (tree_dense.c). The batch's n rows (dy: n × out, x: n × in)
/// form chunks of `chunk` rows (the last may be shorter); chunk c's partial dYᵀ·X has every
/// element one fused multiply-add chain over its rows in order. For each of `blocks` blocks,
/// chunks [first[b], first[b] + count[b]) are added in a fixed pairwise tree (lockstep_tree_sum's)
/// and written to dst[b] (out × in, row stride in). Every level gives the same bits. scratch holds
/// lockstep_tree_dense_scratch(n, out) floats (packed copies of dY and X).
void lockstep_tree_dense_wgrad(int level, const float *dy, const float *x, size_t n, size_t out, size_t in,
                               size_t chunk, int blocks, const int *first, const int *count, float *const *dst,
                               float *scratch);
size_t lockstep_tree_dense_scratch(size_t n, size_t out);

/// dst[i] = the pairwise tree sum of leaves[0..<count][i] (tree_dense.c: leaf t merges once per
/// trailing one bit of t, left operand first; the rest folds from the top), or 0 for no leaves.
/// dst may be one of the leaves.
void lockstep_tree_sum(const float *const *leaves, int count, size_t len, float *dst);

/// C[i][j] = Σ_t A[i][t]·B[t][j] (row-major, leading dimensions given) as one fused multiply-add
/// chain over t in order for every element (rowwise.c): each row of C depends on the same row
/// of A alone, and every level gives the same bits.
void lockstep_rowwise_gemm(int level, const float *a, size_t lda, const float *b, size_t ldb,
                           size_t m, size_t n, size_t k, float *c, size_t ldc);

/// dst (cols × rows) = srcᵀ, src row-major rows × cols.
void lockstep_transpose(const float *restrict src, size_t rows, size_t cols, float *restrict dst);

/// Winograd F(m×m, 3×3) for 3×3 stride-1 convolutions, m = 2 or 4, α = m + 2 (winograd.c).
/// pack: one sample's x (c, h, w) → p (hp, wp, c), channels innermost, the image at (pad, pad),
/// zeros around it (hp = th·m + 2 ≥ h + pad, wp likewise).
void lockstep_winograd_pack(int level, const float *restrict x, size_t c, size_t h, size_t w, size_t pad,
                            size_t hp, size_t wp, float *restrict p);
/// input: the th × tw tiles of p → α² matrices: tile t (= ty·tw + tx) of element ξ at
/// v[ξ·ldx + t·c + channel]. Every level gives the same bits.
void lockstep_winograd_input(int level, int m, const float *p, size_t wp, size_t c, size_t th, size_t tw,
                             float *v, size_t ldx);
/// output: α² matrices (tile t of element ξ at mm[ξ·ldx + t·k + channel]) → q (th·m, wq, k),
/// channels innermost, wq = tw·m. Every level gives the same bits.
void lockstep_winograd_output(int level, int m, const float *mm, size_t ldx, size_t k, size_t th, size_t tw,
                              float *q, size_t wq);
/// gradient tiles: the th × tw m×m tiles of p (a packed output gradient, (th·m, wp, k), zeros
/// past the output) → α² matrices A·dY·Aᵀ, laid out as `input`'s. Every level gives the same bits.
void lockstep_winograd_gradient_tiles(int level, int m, const float *p, size_t wp, size_t k, size_t th, size_t tw,
                                      float *v, size_t ldx);
/// weight gradient: dw (k, c, 3, 3) += Gᵀ·dU·G for dU's α² matrices (c × k) (du[ξ·c·k + i·k + o]),
/// each element one sum in double over the α² elements, rounded once and added (every level
/// gives the same bits).
void lockstep_winograd_weight_gradient(int level, int m, const float *du, size_t k, size_t c, float *dw);
/// unpack: q (rows ≥ ho, wq, k) → y (k, ho, wo), cropping.
void lockstep_winograd_unpack(int level, const float *restrict q, size_t wq, size_t k, size_t ho, size_t wo,
                              float *restrict y);
/// weights: w (k, c, 3, 3) → u, α² matrices of G·g·Gᵀ, each element one sum in double over the
/// 9 taps, rounded once (every level gives the same bits):
/// u[ξ] is (c × k) (u[ξ·c·k + i·k + o]); with flip, the input gradient's weights, each kernel
/// rotated by 180°, as (k × c) (u[ξ·k·c + o·c + i]).
void lockstep_winograd_weights(int level, int m, const float *w, size_t k, size_t c, int flip, float *u);

/// Batch norm over one channel plane of n values (norm.c). Every level gives the same bits.
/// moments: out = (Σ (x − shift), Σ (x − shift)²).
void lockstep_plane_moments(int level, const float *x, size_t n, float shift, float out[2]);
/// forward: y = γ·((x − mean)·inv) + β, with relu ≠ 0 then max(·, 0).
void lockstep_bn_forward(int level, const float *x, float *y, size_t n, float mean, float inv, float gamma,
                         float beta, int relu);
/// gradient sums: out = (Σ g, Σ g·x̂), x̂ = (x − mean)·inv, g = dy or, with a mask (the fused ReLU's
/// output), 0 where mask ≤ 0.
void lockstep_bn_gradient_sums(int level, const float *dy, const float *x, const float *mask, size_t n,
                               float mean, float inv, float out[2]);
/// input gradient: dx = k·(g − a − x̂·b), g and x̂ as in the sums.
void lockstep_bn_input_gradient(int level, const float *dy, const float *x, const float *mask, float *dx,
                                size_t n, float mean, float inv, float k, float a, float b);
/// Batch norm, ReLU and 2×2 max pool (stride 2) fused over one h × w plane (h, w even), with the
/// bits of the three layers apart. forward: out, code (window position 0-3, + 4 where the max is
/// not > 0) and xmax (x at the max), each (h/2)·(w/2); scratch holds lockstep_bn_pool_scratch_floats.
void lockstep_bn_forward_pool(int level, const float *x, size_t h, size_t w, float mean, float inv, float gamma,
                              float beta, float *scratch, float *out, unsigned char *code, float *xmax);
/// gradient sums from the pooled gradient gp: out = (Σ g, Σ g·x̂) as the separate layers sum them;
/// scratch holds lockstep_bn_pool_scratch_floats, as do the forward pass and the input gradient.
/// The scratch each fused pass needs for an h × w plane.
size_t lockstep_bn_pool_scratch_floats(size_t h, size_t w);
void lockstep_bn_pool_gradient_sums(int level, const float *gp, const unsigned char *code, const float *xmax,
                                    size_t h, size_t w, float mean, float inv, float *scratch, float out[2]);
/// input gradient (h × w) from the pooled gradient: dx = k·(g − a − x̂·b).
void lockstep_bn_pool_input_gradient(int level, const float *gp, const unsigned char *code, const float *x,
                                     float *dx, size_t h, size_t w, float mean, float inv, float k, float a,
                                     float b, float *scratch);

#endif
