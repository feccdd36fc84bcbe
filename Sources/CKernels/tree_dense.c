// CKernels: exact mode's dense weight gradient as fixed pairwise trees of chunk sums, and the
// same tree over vectors in memory (declared in CKernels.h).
//
// A chunk's partial weight gradient P = dYᵀ·X is formed in registers, one tile at a time: every
// element is the chain p = fma(dy[r][o], x[r][i], p) over the chunk's rows in order, from p = 0.
// The chunks of a block are then added in the order of a binary counter (leaf t merges with the
// stack once per trailing one bit of t, left operand first; what is left on the stack at the end
// folds from the top): for a block aligned in the tree of the whole batch this is exactly the
// pairwise tree ((c0+c1)+(c2+c3))+... that ChunkTree (TensorCore) continues across ranks, and a
// block cut short by the end of the batch gives the tree with its missing leaves left out. A
// fused multiply-add and an addition are each one correctly rounded IEEE operation, and float
// addition is commutative, so the AVX-512, AVX2 and baseline builds give the same bits whatever
// the vector width or tile shape. Register tiles: kernel_levels.h.
#include "CKernels.h"
#include <string.h>

/// Deepest stack a block can need: blocks have fewer than 2^TREE_DEPTH chunks.
#define TREE_DEPTH 24

#define PREFIX tree_dense
#define BODY "tree_dense_body.h"
#include "kernel_levels.h"
#undef PREFIX
#undef BODY

size_t lockstep_tree_dense_scratch(size_t n, size_t out) {
    return n * out + n * 2 * 16;   // dY packed (at most out rows in tiles) and a column block of X (at most 2 × 16 floats wide)
}

void lockstep_tree_dense_wgrad(int level, const float *dy, const float *x, size_t n, size_t out, size_t in,
                               size_t chunk, int blocks, const int *first, const int *count, float *const *dst,
                               float *scratch) {
    if (level < 0) level = lockstep_kernel_level();
#if defined(__x86_64__) && defined(__clang__)
    if (level == 2) { tree_dense_avx512(dy, x, n, out, in, chunk, blocks, first, count, dst, scratch); return; }
    if (level == 1 && __builtin_cpu_supports("fma")) { tree_dense_avx2(dy, x, n, out, in, chunk, blocks, first, count, dst, scratch); return; }
#endif
    tree_dense_baseline(dy, x, n, out, in, chunk, blocks, first, count, dst, scratch);
}

/// Elements per tile of lockstep_tree_sum: the stack of partial sums stays in L1/L2.
#define SUM_TILE 512

void lockstep_tree_sum(const float *const *leaves, int count, size_t len, float *dst) {
    // Two leaves, the one-host reduction's every node (ChunkTree.combine): the tree is their one
    // sum, left first, written straight into dst (the tiles below would add into the scratch and
    // copy the root out; when they copied every tile five times, this took 12% of a 2-rank MLP
    // step). dst may be either leaf (element by element is safe).
    if (count == 2) {
        const float *a = leaves[0], *b = leaves[1];
        for (size_t i = 0; i < len; i++) dst[i] = a[i] + b[i];
        return;
    }
    // The stack holds pointers: a leaf's tile is read where it lies, and a sum is written to the
    // scratch of the depth it lands at (a left operand there is read before it is overwritten,
    // element by element). No tile is copied but the root's, into dst.
    static _Thread_local float stack[TREE_DEPTH][SUM_TILE];
    const float *top[TREE_DEPTH];
    for (size_t lo = 0; lo < len; lo += SUM_TILE) {
        const size_t m = len - lo < SUM_TILE ? len - lo : SUM_TILE;
        int depth = 0;
        for (int t = 0; t < count; t++) {
            const float *p = leaves[t] + lo;
            for (unsigned k = (unsigned)t; k & 1; k >>= 1) {
                const float *left = top[--depth];
                float *out = stack[depth];
                for (size_t i = 0; i < m; i++) out[i] = left[i] + p[i];
                p = out;
            }
            top[depth++] = p;
        }
        if (depth == 0) { memset(dst + lo, 0, m * sizeof(float)); continue; }
        const float *acc = top[--depth];
        while (depth > 0) {
            const float *left = top[--depth];
            float *out = stack[depth];
            for (size_t i = 0; i < m; i++) out[i] = left[i] + acc[i];
            acc = out;
        }
        memmove(dst + lo, acc, m * sizeof(float));   // acc may be dst's own tile (one leaf, in place)
    }
}
