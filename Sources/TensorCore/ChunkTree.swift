// ChunkTree: the fixed pairwise tree in which exact mode adds a batch's chunk sums, whatever the
// number of ranks.
//
// A micro-batch of C chunks (chunk c holds global batch positions [c·size, (c+1)·size)) has one
// tree: leaves are the chunk sums, node (lo, w) for w a power of two and lo a multiple of w
// covers leaves [lo, lo + w) ∩ [0, C), and its value is left + right, or the left child alone
// when the right one covers no leaf. The root (0, 2^⌈log2 C⌉) is the micro-batch's sum. Every
// rank holds a contiguous run of whole chunks (GlobalBatchSampler.shard); `blocks` cuts that
// run into the largest nodes it covers, and each rank adds its blocks' leaves itself (CKernels'
// tree kernels use this order: a binary counter over an aligned block builds exactly its
// subtree). After the ranks exchange their block sums, `combine` adds the blocks up the tree.
// Every addition is then the one a single process makes over the whole micro-batch, so the bits
// are the same on any number of ranks, and no float sum has a kernel-chosen order.
//
// Error: a chunk's chain of k fused multiply-adds and a tree of depth ⌈log2 C⌉ give each element
// within γ_{k+⌈log2 C⌉}·Σ|terms| of the exact sum (Higham, Accuracy and Stability of Numerical
// Algorithms, 2nd ed., §3.1 and §4.2: γ_n = n·u/(1 − n·u), u = 2^-24), as a float GEMM's would be.
import CKernels

public enum ChunkTree {
    /// The nodes that cover leaves `run` (within [0, total)) with the fewest blocks, in order:
    /// each block is the effective leaf range of a node.
    public static func blocks(_ run: Range<Int>, total: Int) -> [Range<Int>] {
        precondition(run.lowerBound >= 0 && run.upperBound <= total, "a run of chunks outside the batch")
        var out: [Range<Int>] = []
        var lo = run.lowerBound
        while lo < run.upperBound {
            var w = 1
            // Grow while the node of width 2w starting at lo is aligned and covers only the run.
            while lo % (2 * w) == 0 && min(lo + 2 * w, total) <= run.upperBound && 2 * w <= (1 << 30) {
                if w >= total { break }
                w *= 2
            }
            let hi = min(lo + w, total)
            out.append(lo..<hi)
            lo = hi
        }
        return out
    }

    /// dst[i] = the tree sum of leaves[0..<leaves.count][i] for i < count, in the order CKernels'
    /// tree kernels use (dst may be one of the leaves).
    public static func sum(_ leaves: [UnsafePointer<Float>], count: Int, into dst: UnsafeMutablePointer<Float>) {
        let list: [UnsafePointer<Float>?] = leaves
        lockstep_tree_sum(list, Int32(list.count), count, dst)
    }

    /// Width of the root node: the smallest power of two ≥ total.
    public static func rootWidth(_ total: Int) -> Int {
        var w = 1
        while w < total { w *= 2 }
        return w
    }

    /// Sums `blocks` (effective leaf ranges that together cover [0, total), each with its sums at
    /// `values`) up the tree, elements [0, count) of each, into `dst`. `scratch` holds the inner
    /// nodes (at least `scratchNeeded` × count floats). dst may not be a block's values unless
    /// that block is the root.
    public static func combine(_ blocks: [(range: Range<Int>, values: UnsafePointer<Float>)], total: Int, count: Int,
                               into dst: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>?) {
        guard total > 0 else { dst.update(repeating: 0, count: count); return }
        var used = 0
        func node(_ lo: Int, _ w: Int, root: Bool) -> UnsafePointer<Float> {
            let range = lo..<min(lo + w, total)
            if let b = blocks.first(where: { $0.range == range }) { return b.values }
            precondition(w > 1, "blocks do not cover leaf \(lo)")
            let left = node(lo, w / 2, root: false)
            if lo + w / 2 >= total { return left }
            let right = node(lo + w / 2, w / 2, root: false)
            let out: UnsafeMutablePointer<Float>
            if root { out = dst } else { out = scratch! + used * count; used += 1 }
            let leaves: [UnsafePointer<Float>?] = [left, right]
            lockstep_tree_sum(leaves, 2, count, out)
            return UnsafePointer(out)
        }
        let root = node(0, rootWidth(total), root: true)
        if root != UnsafePointer(dst) { dst.update(from: root, count: count) }
    }

    /// Inner nodes `combine` computes below the root for these blocks (its scratch, in vectors).
    public static func scratchNeeded(_ blocks: [Range<Int>], total: Int) -> Int {
        var n = 0
        func node(_ lo: Int, _ w: Int, root: Bool) {
            let range = lo..<min(lo + w, total)
            if blocks.contains(range) || w <= 1 { return }
            node(lo, w / 2, root: false)
            if lo + w / 2 >= total { return }
            node(lo + w / 2, w / 2, root: false)
            if !root { n += 1 }
        }
        if total > 0 { node(0, rootWidth(total), root: true) }
        return n
    }
}
