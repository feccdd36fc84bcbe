// ChunkTree: the blocks a rank's run of chunks is cut into, and the sum up the tree, against a
// recursive definition of the pairwise tree written here from its description.
import TensorCore
import XCTest

/// The tree's value at node (lo, w) over `leaves` (nil: the node covers no leaf), by definition:
/// a leaf, or left + right, or the left child alone when the right one is empty.
func treeNode(_ leaves: [Float], _ lo: Int, _ w: Int) -> Float? {
    if lo >= leaves.count { return nil }
    if w == 1 { return leaves[lo] }
    let left = treeNode(leaves, lo, w / 2)!
    guard let right = treeNode(leaves, lo + w / 2, w / 2) else { return left }
    return left + right
}

func treeRoot(_ leaves: [Float]) -> Float {
    leaves.isEmpty ? 0 : treeNode(leaves, 0, ChunkTree.rootWidth(leaves.count))!
}

/// Rank r's run of `total` chunks over `ranks` ranks: contiguous, lower ranks one more when they
/// do not divide (GlobalBatchSampler's split, which this target cannot import).
func contiguousRun(_ total: Int, _ r: Int, _ ranks: Int) -> Range<Int> {
    let base = total / ranks, extra = total % ranks
    let lo = r * base + min(r, extra)
    return lo..<(lo + base + (r < extra ? 1 : 0))
}

final class ChunkTreeTests: XCTestCase {
    /// Blocks cover the run exactly, in order, and each is the effective range of an aligned node
    /// (lo a multiple of a power of two w with the block = [lo, lo + w) ∩ [0, total)), and no two
    /// neighbours could merge into one such node.
    func testBlocksAreAlignedNodesCoveringTheRun() {
        for total in 1...40 {
            for ranks in 1...9 {
                for r in 0..<ranks {
                    let run = contiguousRun(total, r, ranks)
                    let blocks = ChunkTree.blocks(run, total: total)
                    XCTAssertEqual(blocks.first?.lowerBound ?? run.lowerBound, run.lowerBound)
                    XCTAssertEqual(blocks.last?.upperBound ?? run.upperBound, run.upperBound)
                    for (a, b) in zip(blocks, blocks.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
                    func isNode(_ r: Range<Int>) -> Bool {
                        var w = 1
                        while w <= 2 * ChunkTree.rootWidth(total) {
                            if r.lowerBound % w == 0 && r.upperBound == min(r.lowerBound + w, total) { return true }
                            w *= 2
                        }
                        return false
                    }
                    for b in blocks { XCTAssertTrue(isNode(b), "block \(b) of run \(run), \(total) chunks") }
                    for (a, b) in zip(blocks, blocks.dropFirst()) { XCTAssertFalse(isNode(a.lowerBound..<b.upperBound), "\(a) and \(b) are one node") }
                }
            }
        }
    }

    /// Each rank's blocks summed leaf by leaf (ChunkTree.sum over the block's leaves, as a rank
    /// does), then combined up the tree, give the bits of the tree over all leaves, for any
    /// number of ranks; and that root differs from a left-to-right float sum somewhere (the
    /// test could fail if the order were not the tree's).
    func testCombiningEveryRanksBlocksGivesTheTreeOverAllLeaves() {
        let s = Philox(seed: 21).stream(.test, 1, 0)
        let width = 64
        var differsFromSequential = false
        for total in [1, 2, 3, 5, 7, 8, 13, 16, 33] {
            let leaves = (0..<total).map { c in (0..<width).map { i in s.normal(c * width + i) * powf(10, Float((c + i) % 9) - 4) } }
            let want = (0..<width).map { i in treeRoot(leaves.map { $0[i] }) }
            let sequential = (0..<width).map { i in leaves.reduce(Float(0)) { $0 + $1[i] } }
            if want != sequential { differsFromSequential = true }
            // Leaves, then one vector per block (at most one block per leaf), then the scratch.
            let memory = UnsafeMutablePointer<Float>.allocate(capacity: 3 * total * width)
            defer { memory.deallocate() }
            for (c, leaf) in leaves.enumerated() { (memory + c * width).update(from: leaf, count: width) }
            for ranks in 1...9 {
                var list: [(range: Range<Int>, values: UnsafePointer<Float>)] = []
                for r in 0..<ranks {
                    for b in ChunkTree.blocks(contiguousRun(total, r, ranks), total: total) {
                        let out = memory + (total + list.count) * width
                        ChunkTree.sum(b.map { UnsafePointer(memory + $0 * width) }, count: width, into: out)
                        list.append((b, UnsafePointer(out)))
                    }
                }
                XCTAssertLessThanOrEqual(ChunkTree.scratchNeeded(list.map(\.range), total: total), total)
                var got = [Float](repeating: .nan, count: width)
                got.withUnsafeMutableBufferPointer { ChunkTree.combine(list, total: total, count: width, into: $0.baseAddress!, scratch: memory + 2 * total * width) }
                XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "\(total) chunks on \(ranks) ranks")
            }
        }
        XCTAssertTrue(differsFromSequential, "the data should tell the tree's order from a sequential one")
    }

    /// ChunkTree.sum (CKernels' lockstep_tree_sum, which has a path of its own for two leaves)
    /// against the tree's definition, element by element: 1 to 9 leaves, lengths inside one tile
    /// of the kernel and across several (512 elements a tile), and with the destination one of the
    /// leaves, as the one-host reduction adds a partial sum onto the sum in place.
    func testSumOfLeavesIsTheTreeAtEveryLengthAndInPlace() {
        var seed: UInt64 = 0x9E3779B97F4A7C15
        func next() -> Float {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            // Magnitudes over 2^-10 ... 2^10 so that the order of the additions shows in the bits.
            return Float(Int64(bitPattern: seed >> 11) % 2001 - 1000) * Float(sign: .plus, exponent: Int(seed % 21) - 10, significand: 1) / 1000
        }
        for leafCount in 1...9 {
            for length in [1, 17, 511, 512, 1100] {
                let leaves = (0..<leafCount).map { _ in (0..<length).map { _ in next() } }
                let expected = (0..<length).map { i in treeRoot(leaves.map { $0[i] }) }
                let pointers = leaves.map { l -> UnsafeMutablePointer<Float> in
                    let p = UnsafeMutablePointer<Float>.allocate(capacity: length)
                    p.initialize(from: l, count: length)
                    return p
                }
                defer { pointers.forEach { $0.deallocate() } }
                var out = [Float](repeating: .nan, count: length)
                out.withUnsafeMutableBufferPointer { ChunkTree.sum(pointers.map { UnsafePointer($0) }, count: length, into: $0.baseAddress!) }
                XCTAssertEqual(out.map(\.bitPattern), expected.map(\.bitPattern), "\(leafCount) leaves of \(length)")
                // In place: the destination is the first leaf.
                ChunkTree.sum(pointers.map { UnsafePointer($0) }, count: length, into: pointers[0])
                XCTAssertEqual((0..<length).map { pointers[0][$0].bitPattern }, expected.map(\.bitPattern), "\(leafCount) leaves of \(length), in place")
            }
        }
    }
}
