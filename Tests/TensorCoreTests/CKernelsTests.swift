// Tests of the C kernels (Sources/CKernels): every instruction-set level this CPU runs gives the
// bits of a scalar Swift reference that rounds each operation as the formula is written.
import CKernels
import TensorCore
import XCTest

final class CKernelsTests: XCTestCase {
    /// The levels to compare: each one this CPU runs (baseline always).
    var levels: [Int32] { (0...2).map(Int32.init).filter { lockstep_kernel_level_supported($0) != 0 } }

    /// Adam at every level against the scalar formula, bit for bit: weights, both moments. The
    /// lengths cover empty, shorter than one vector, and vector bodies with tails of 1-15; the
    /// values span six orders of magnitude with both signs, and the moments start non-zero.
    func testAdamStepMatchesScalarReferenceAtEveryLevel() {
        XCTAssertTrue(levels.contains(lockstep_kernel_level()), "the chosen level must be one the CPU runs")
        let rng = Philox(seed: 11)
        let b1: Float = 0.9, b2: Float = 0.999, eps: Float = 1e-8
        for (k, n) in [0, 1, 7, 8, 15, 16, 17, 31, 64, 1000, 4099].enumerated() {
            let s = rng.stream(.test, k, 0)
            let w0 = (0..<n).map { s.normal($0) * 0.5 }
            let g0 = (0..<n).map { s.normal(n + $0) * powf(10, Float($0 % 7) - 4) }
            let m0 = (0..<n).map { s.normal(2 * n + $0) * 1e-3 }
            let v0 = (0..<n).map { abs(s.normal(3 * n + $0)) * 1e-5 }
            for (l2, shrink) in [(Float(0), Float(1)), (5e-4, 1), (0, 1 - 1e-3 * 0.01)] {
                let stepSize: Float = 1e-3 / (1 - 0.9 * 0.9), invC2: Float = 1 / (1 - 0.999 * 0.999)
                // The reference: one rounding per operation, in the order written.
                var rw = w0, rm = m0, rv = v0
                for i in 0..<n {
                    let grad = g0[i] + l2 * rw[i]
                    rm[i] = b1 * rm[i] + (1 - b1) * grad
                    rv[i] = b2 * rv[i] + (1 - b2) * grad * grad
                    rw[i] = rw[i] * shrink - stepSize * rm[i] / ((rv[i] * invC2).squareRoot() + eps)
                }
                for level in levels {
                    var w = w0, m = m0, v = v0
                    w.withUnsafeMutableBufferPointer { w in m.withUnsafeMutableBufferPointer { m in v.withUnsafeMutableBufferPointer { v in
                        g0.withUnsafeBufferPointer { g in
                            lockstep_adam_step(level, w.baseAddress, g.baseAddress, m.baseAddress, v.baseAddress, n,
                                               b1, b2, eps, l2, shrink, stepSize, invC2)
                        }
                    } } }
                    let what = "n=\(n) l2=\(l2) shrink=\(shrink) level \(String(cString: lockstep_kernel_level_name(level)))"
                    XCTAssertEqual(w.map { $0.bitPattern }, rw.map { $0.bitPattern }, "weights, \(what)")
                    XCTAssertEqual(m.map { $0.bitPattern }, rm.map { $0.bitPattern }, "first moment, \(what)")
                    XCTAssertEqual(v.map { $0.bitPattern }, rv.map { $0.bitPattern }, "second moment, \(what)")
                    if n > 0 { XCTAssertNotEqual(w, w0, "the step must move the weights, \(what)") }
                }
            }
        }
    }

    /// The streaming copy a checkpoint's image is filled with, at every level: the source's bits,
    /// for destinations at every offset from a vector boundary (the unaligned head and the tail
    /// take plain stores), and nothing written outside the destination.
    func testStreamCopyGivesTheSourceBitsAtEveryLevelAndAlignment() {
        let rng = Philox(seed: 12)
        for (k, n) in [1, 17, 2048, 2049, 5000].enumerated() {
            let s = rng.stream(.test, k, 1)
            let src = (0..<n).map { s.normal($0) * 0.5 }
            for level in levels {
                for shift in [0, 1, 5, 15] {
                    let image = UnsafeMutablePointer<Float>.allocate(capacity: n + 64)
                    defer { image.deallocate() }
                    image.initialize(repeating: .nan, count: n + 64)
                    // `shift` floats past a 64-byte boundary.
                    let base = UnsafeMutablePointer<Float>(bitPattern: (Int(bitPattern: image) + 63) / 64 * 64)! + shift
                    lockstep_stream_copy(level, base, src, n)
                    lockstep_stream_fence()
                    let what = "n=\(n) shift \(shift) level \(String(cString: lockstep_kernel_level_name(level)))"
                    XCTAssertEqual((0..<n).map { base[$0].bitPattern }, src.map(\.bitPattern), what)
                    XCTAssertTrue(base[n].isNaN && (shift == 0 || base[-1].isNaN), "nothing written outside, \(what)")
                }
            }
        }
    }

    /// 2×2 max pooling at every level against the definition (first strictly greatest of the
    /// window in reading order), values and indices, on widths with vector tails, ties and a NaN.
    func testMaxPoolMatchesDefinitionAtEveryLevel() {
        for (h, w) in [(2, 2), (6, 10), (28, 28), (14, 14), (5, 35)] {
            let ho = h / 2, wo = w / 2
            let s = Philox(seed: 4).stream(.test, h, w)
            var x = (0..<(h * w)).map { (s.normal($0) * 2).rounded() / 2 }
            x[min(3, x.count - 1)] = .nan
            var expected = [Float](repeating: 0, count: ho * wo), expectedAt = [Int32](repeating: 0, count: ho * wo)
            for oh in 0..<ho { for ow in 0..<wo {
                var best = 2 * oh * w + 2 * ow
                for i in [best + 1, best + w, best + w + 1] where x[i] > x[best] { best = i }
                expected[oh * wo + ow] = x[best]; expectedAt[oh * wo + ow] = Int32(best)
            } }
            for level in levels {
                var y = [Float](repeating: -1, count: ho * wo), at = [Int32](repeating: -1, count: ho * wo)
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in at.withUnsafeMutableBufferPointer { ap in
                    lockstep_maxpool2x2(level, xp.baseAddress, w, ho, wo, yp.baseAddress, ap.baseAddress)
                } } }
                XCTAssertEqual(y.map { $0.bitPattern }, expected.map { $0.bitPattern }, "values \(h)x\(w) level \(level)")
                XCTAssertEqual(at, expectedAt, "indices \(h)x\(w) level \(level)")
            }
        }
    }

    /// Exact mode's dense weight gradient at every level against the scalar definition, bit for
    /// bit: per chunk a fused multiply-add chain over the rows in order, rounded to round(p·2^s)
    /// and added to the Int64 sums; the largest |p| and the non-finite flag. Shapes cover row
    /// tiles with leftover rows (out 1, 7, 13), column tails of a whole vector and of single
    /// columns (in 1, 15, 40, 77), and a short last chunk; values span six orders of magnitude.
    /// The AVX-512 and AVX2 bodies use different vector widths and tiles, so equal bits here are
    /// the promise that exact mode's gradients do not depend on the CPU's vector unit.
    /// The dense weight gradient's chunk tree at every level against its definition: each chunk's
    /// partial dYᵀ·X one fused multiply-add chain over the chunk's rows in order, the chunks of a
    /// block added in the pairwise tree (treeRoot, ChunkTreeTests), bit for bit. Shapes cover a
    /// short last chunk, rows and columns left over by the register tiles, blocks of 1, 2, 3 and
    /// 4 chunks (3: a tree cut short), and several blocks in one call.
    func testTreeDenseGradientMatchesItsDefinitionAtEveryLevel() {
        let rng = Philox(seed: 12)
        let cases: [(n: Int, out: Int, inF: Int, chunk: Int, blocks: [(Int, Int)])] = [
            (5, 1, 1, 2, [(0, 3)]), (16, 7, 15, 16, [(0, 1)]), (37, 13, 40, 8, [(0, 4), (4, 1)]),
            (33, 9, 77, 16, [(0, 2), (2, 1)]), (64, 16, 96, 16, [(0, 4)]), (96, 10, 35, 8, [(0, 8), (8, 2), (10, 1), (11, 1)])]
        for (k, c) in cases.enumerated() {
            let s = rng.stream(.test, k, 0)
            let dy = (0..<(c.n * c.out)).map { s.normal($0) * powf(10, Float($0 % 5) - 3) }
            let x = (0..<(c.n * c.inF)).map { s.normal(100_000 + $0) * powf(10, Float($0 % 3) - 1) }
            func chunkSum(_ j: Int, _ o: Int, _ i: Int) -> Float {
                var p: Float = 0
                for r in (j * c.chunk)..<min((j + 1) * c.chunk, c.n) { p = p.addingProduct(dy[r * c.out + o], x[r * c.inF + i]) }   // one fused multiply-add
                return p
            }
            let want = c.blocks.map { (first, count) in
                (0..<(c.out * c.inF)).map { e in treeRoot((first..<(first + count)).map { chunkSum($0, e / c.inF, e % c.inF) }) }
            }
            for level in levels {
                let out = UnsafeMutablePointer<Float>.allocate(capacity: c.blocks.count * c.out * c.inF)
                defer { out.deallocate() }
                out.initialize(repeating: .nan, count: c.blocks.count * c.out * c.inF)
                let dst: [UnsafeMutablePointer<Float>?] = c.blocks.indices.map { out + $0 * c.out * c.inF }
                var scratch = [Float](repeating: .nan, count: lockstep_tree_dense_scratch(c.n, c.out))
                lockstep_tree_dense_wgrad(level, dy, x, c.n, c.out, c.inF, c.chunk, Int32(c.blocks.count),
                                          c.blocks.map { Int32($0.0) }, c.blocks.map { Int32($0.1) }, dst, &scratch)
                for b in c.blocks.indices {
                    let got = (0..<(c.out * c.inF)).map { out[b * c.out * c.inF + $0].bitPattern }
                    XCTAssertEqual(got, want[b].map(\.bitPattern), "level \(level), case \(k), block \(b)")
                }
            }
        }
    }

    /// The row-wise GEMM at every level against the scalar definition (one fused multiply-add
    /// chain per element over k in order), bit for bit, and each row computed alone gives the
    /// bits it has in the whole product: what lets exact mode run a dense layer over any number
    /// of samples at once. Shapes cover leftover rows, a vector and a half of columns, fewer
    /// columns than a vector (the zero-padded panel), and leading dimensions wider than the rows.
    func testRowwiseGEMMIsTheScalarChainAtEveryLevelAndRowsAreIndependent() {
        let rng = Philox(seed: 13)
        for (t, (m, n, k)) in [(1, 1, 1), (7, 10, 33), (13, 24, 5), (37, 77, 64), (16, 512, 9)].enumerated() {
            let s = rng.stream(.test, t, 0)
            let lda = k + 3, ldb = n + 2, ldc = n + 1
            let a = (0..<(m * lda)).map { s.normal($0) * powf(10, Float($0 % 4) - 2) }
            let b = (0..<(k * ldb)).map { s.normal(100_000 + $0) }
            var want = [Float](repeating: -7, count: m * ldc)
            for i in 0..<m {
                for j in 0..<n {
                    var p: Float = 0
                    for q in 0..<k { p = p.addingProduct(a[i * lda + q], b[q * ldb + j]) }
                    want[i * ldc + j] = p
                }
            }
            for level in levels {
                var c = [Float](repeating: -7, count: m * ldc)
                lockstep_rowwise_gemm(level, a, lda, b, ldb, m, n, k, &c, ldc)
                XCTAssertEqual(c.map(\.bitPattern), want.map(\.bitPattern), "level \(level), \(m)×\(n)×\(k)")
                for i in [0, m - 1] {   // a row alone
                    var row = [Float](repeating: 0, count: n)
                    a.withUnsafeBufferPointer { a in
                        lockstep_rowwise_gemm(level, a.baseAddress! + i * lda, lda, b, ldb, 1, n, k, &row, n)
                    }
                    XCTAssertEqual(row.map(\.bitPattern), Array(want[(i * ldc)..<(i * ldc + n)]).map(\.bitPattern), "row \(i) alone")
                }
            }
        }
    }

    /// Whole 16 × 16 tiles (in registers where the CPU has AVX-512), edge tiles, and both mixed.
    func testTransposeMovesEveryElement() {
        for (rows, cols) in [(1, 1), (3, 40), (33, 17), (64, 48), (16, 16), (50, 70), (64, 784), (784, 64)] {
            let src = (0..<(rows * cols)).map(Float.init)
            var dst = [Float](repeating: -1, count: rows * cols)
            lockstep_transpose(src, rows, cols, &dst)
            for i in 0..<rows { for j in 0..<cols { XCTAssertEqual(dst[j * rows + i], src[i * cols + j]) } }
        }
    }
}
