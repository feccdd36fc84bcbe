import TensorCore
import XCTest

final class RandomTests: XCTestCase {
    /// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
    func testPhiloxKnownAnswers() {
        let zero = Philox(seed: 0).block(0, 0, 0, 0)
        XCTAssertEqual([zero.0, zero.1, zero.2, zero.3], [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8])
        let ones = Philox(seed: 0xffff_ffff_ffff_ffff).block(0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff)
        XCTAssertEqual([ones.0, ones.1, ones.2, ones.3], [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd])
        let pi = Philox(seed: 0x299f_31d0_a409_3822).block(0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344)
        XCTAssertEqual([pi.0, pi.1, pi.2, pi.3], [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1])
    }

    func testStreamsAreKeyedAndUniform() {
        let rng = Philox(seed: 42)
        let a = rng.stream(.dropout, 1, 7), b = rng.stream(.dropout, 1, 8)
        XCTAssertEqual(a.word(5), rng.stream(.dropout, 1, 7).word(5))
        XCTAssertNotEqual((0..<8).map { a.word($0) }, (0..<8).map { b.word($0) })
        // fillUniform agrees with uniform(i) at any starting offset.
        var out = [Float](repeating: 0, count: 11)
        out.withUnsafeMutableBufferPointer { a.fillUniform($0.baseAddress!, count: 11, first: 3) }
        XCTAssertEqual(out, (3..<14).map { a.uniform($0) })
        // Mean of 20,000 uniforms within 5 standard errors (σ = 1/√12/√n ≈ 0.002) of 0.5.
        let n = 20_000
        let mean = (0..<n).reduce(0.0) { $0 + Double(a.uniform($1)) } / Double(n)
        XCTAssertEqual(mean, 0.5, accuracy: 0.01)
        // Normals: mean ≈ 0, variance ≈ 1.
        let normals = (0..<n).map { Double(a.normal($0)) }
        let m = normals.reduce(0, +) / Double(n)
        let v = normals.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(n)
        // Standard errors over n = 20,000: the mean's is 1/√n ≈ 0.0071, the variance's √(2/n) ≈
        // 0.010; the bounds are about 5.6 and 5 of them (a false failure once in ~10⁶ runs,
        // and these draws are fixed anyway), while a wrong scale (σ = 1.1 gives v ≈ 1.21) fails.
        XCTAssertEqual(m, 0, accuracy: 0.04)
        XCTAssertEqual(v, 1, accuracy: 0.05)
        // below(bound) stays in range and hits every value.
        let hits = Set((0..<1000).map { a.below(7, $0) })
        XCTAssertEqual(hits, Set(0..<7))
    }
}

final class KernelTests: XCTestCase {
    func testGemmAgainstNaiveProduct() {
        let m = 5, n = 7, k = 3
        let rng = Philox(seed: 1).stream(.test, 0, 0)
        let a = (0..<(m * k)).map { rng.uniform($0) - 0.5 }
        let b = (0..<(k * n)).map { rng.uniform(100 + $0) - 0.5 }
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // Store A as (k, m) when transposed, B as (n, k) when transposed.
            let aStore = ta ? (0..<(k * m)).map { a[($0 % m) * k + $0 / m] } : a
            let bStore = tb ? (0..<(n * k)).map { b[($0 % k) * n + $0 / k] } : b
            var c = [Float](repeating: 1, count: m * n)
            gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 2, a: aStore, lda: ta ? m : k,
                 b: bStore, ldb: tb ? k : n, beta: 0.5, c: &c, ldc: n)
            for i in 0..<m {
                for j in 0..<n {
                    var s: Float = 0
                    for p in 0..<k { s += a[i * k + p] * b[p * n + j] }
                    // k = 3 products of values in [−0.5, 0.5): |s| ≤ 0.75, so float rounding (any
                    // order or FMA) stays below 3·2⁻²⁴·0.75·2 ≈ 3e-7; 1e-5 leaves room, a wrong
                    // transpose or alpha/beta is off by ≥ 1e-2.
                    XCTAssertEqual(c[i * n + j], 2 * s + 0.5, accuracy: 1e-5, "ta \(ta) tb \(tb) at \(i),\(j)")
                }
            }
        }
    }

    /// col2im is the adjoint of im2col: <im2col(x), c> = <x, col2im(c)> for any x, c.
    func testCol2ImIsAdjointOfIm2Col() {
        for (stride, padding, kernel) in [(1, 1, 3), (2, 1, 3), (2, 0, 2), (1, 0, 1), (3, 2, 3)] {
            let g = ConvGeometry(channels: 2, height: 7, width: 6, kernelH: kernel, kernelW: kernel, stride: stride, padding: padding)
            let n = 2
            let xCount = n * 2 * 7 * 6, colCount = g.patchSize * n * g.outHeight * g.outWidth
            let rng = Philox(seed: 9).stream(.test, stride, padding)
            let x = (0..<xCount).map { rng.uniform($0) - 0.5 }
            let c = (0..<colCount).map { rng.uniform(10_000 + $0) - 0.5 }
            var cols = [Float](repeating: 0, count: colCount)
            var back = [Float](repeating: 0, count: xCount)
            x.withUnsafeBufferPointer { xp in cols.withUnsafeMutableBufferPointer { im2col(xp.baseAddress!, batch: n, geometry: g, into: $0.baseAddress!) } }
            var scratch = c   // col2im zeroes the entries of taps outside the image
            scratch.withUnsafeMutableBufferPointer { cp in back.withUnsafeMutableBufferPointer { col2im(cp.baseAddress!, batch: n, geometry: g, into: $0.baseAddress!) } }
            let lhs = zip(cols, c).reduce(0.0) { $0 + Double($1.0 * $1.1) }
            let rhs = zip(x, back).reduce(0.0) { $0 + Double($1.0 * $1.1) }
            // Both sides add ~10³ products of values in [−0.5, 0.5), each rounded in float (error
            // ≤ 2⁻²⁴·0.25 ≈ 1.5e-8) and summed in Double: they differ by ≲ 1.5e-5 at worst; a
            // misplaced or missing tap changes the sum by ~1e-2.
            XCTAssertEqual(lhs, rhs, accuracy: 1e-4, "stride \(stride) padding \(padding) kernel \(kernel)")
            // And im2col picks the right pixel: patch row (c=1, kh, kw) of output (0, 0) of sample 1.
            let kh = kernel - 1, kw = 0
            let ih = -padding + kh, iw = -padding + kw
            let expected: Float = (ih >= 0 && ih < 7 && iw >= 0 && iw < 6) ? x[((1 * 2 + 1) * 7 + ih) * 6 + iw] : 0
            let row = (1 * kernel + kh) * kernel + kw
            XCTAssertEqual(cols[row * n * g.outHeight * g.outWidth + g.outHeight * g.outWidth], expected)
        }
    }

    /// im2col and col2im against the definitions written out per element, bit for bit, over
    /// geometries that take the stride-1 "same" fast path (K = 2P + 1, including P wider than
    /// the image), other stride-1 ones, and strided ones.
    func testIm2ColAndCol2ImMatchDefinitionBitForBit() {
        let cases: [(h: Int, w: Int, k: Int, s: Int, p: Int)] = [
            (7, 6, 3, 1, 1), (5, 5, 5, 1, 2), (4, 9, 1, 1, 0), (3, 3, 7, 1, 3), (2, 1, 3, 1, 1),
            (6, 6, 3, 2, 1), (7, 5, 2, 1, 0), (6, 7, 3, 1, 0),
            // Strided: taps whose in-row outputs start late, end early or are none at all.
            (7, 7, 3, 2, 1), (9, 8, 1, 2, 0), (5, 6, 3, 3, 2), (2, 3, 5, 2, 2), (8, 8, 7, 2, 3)]
        for (t, q) in cases.enumerated() {
            let channels = 3, n = 2
            let g = ConvGeometry(channels: channels, height: q.h, width: q.w, kernelH: q.k, kernelW: q.k, stride: q.s, padding: q.p)
            let ho = g.outHeight, wo = g.outWidth, plane = ho * wo, rowLength = n * plane
            let rng = Philox(seed: 21).stream(.test, t, 0)
            let x = (0..<(n * channels * q.h * q.w)).map { rng.normal($0) }
            let c = (0..<(g.patchSize * rowLength)).map { rng.normal(100_000 + $0) }
            var expectedCols = [Float](repeating: 0, count: c.count)
            var expectedBack = [Float](repeating: 0, count: x.count)
            for ch in 0..<channels { for kh in 0..<q.k { for kw in 0..<q.k { for s in 0..<n { for oh in 0..<ho { for ow in 0..<wo {
                let ih = oh * q.s - q.p + kh, iw = ow * q.s - q.p + kw
                guard ih >= 0, ih < q.h, iw >= 0, iw < q.w else { continue }
                let at = ((ch * q.k + kh) * q.k + kw) * rowLength + s * plane + oh * wo + ow
                let xi = ((s * channels + ch) * q.h + ih) * q.w + iw
                expectedCols[at] = x[xi]
                expectedBack[xi] += c[at]
            } } } } } }
            var cols = [Float](repeating: .nan, count: c.count), back = [Float](repeating: .nan, count: x.count)
            var scratch = c
            x.withUnsafeBufferPointer { xp in cols.withUnsafeMutableBufferPointer { im2col(xp.baseAddress!, batch: n, geometry: g, into: $0.baseAddress!) } }
            scratch.withUnsafeMutableBufferPointer { cp in back.withUnsafeMutableBufferPointer { col2im(cp.baseAddress!, batch: n, geometry: g, into: $0.baseAddress!) } }
            XCTAssertEqual(cols.map { $0.bitPattern }, expectedCols.map { $0.bitPattern }, "im2col, case \(q)")
            XCTAssertEqual(back.map { $0.bitPattern }, expectedBack.map { $0.bitPattern }, "col2im, case \(q)")
        }
    }

    func testVectorKernelsMatchScalarLoops() {
        for n in [0, 1, 7, 8, 9, 16, 17, 100] {
            let rng = Philox(seed: 3).stream(.test, n, 0)
            let x = (0..<n).map { rng.uniform($0) * 4 - 2 }
            let h = (0..<n).map { rng.uniform(1000 + $0) * 4 - 2 }
            x.withUnsafeBufferPointer { xp in
                h.withUnsafeBufferPointer { hp in
                    let p = xp.baseAddress ?? UnsafePointer(bitPattern: 16)!, q = hp.baseAddress ?? UnsafePointer(bitPattern: 16)!
                    XCTAssertEqual(Vector.sum(p, n), x.reduce(0, +), accuracy: 1e-4)
                    XCTAssertEqual(Vector.sumSquaredDeviations(p, n, from: 0.3), x.map { ($0 - 0.3) * ($0 - 0.3) }.reduce(0, +), accuracy: 1e-3)
                    let (s, d) = Vector.sumAndDot(p, q, n)
                    XCTAssertEqual(s, x.reduce(0, +), accuracy: 1e-4)
                    XCTAssertEqual(d, zip(x, h).map { $0 * $1 }.reduce(0, +), accuracy: 1e-3)
                }
            }
            var y = [Float](repeating: 9, count: n), dx = y
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    guard n > 0 else { return }
                    Vector.relu(xp.baseAddress!, yp.baseAddress!, n)
                }
            }
            XCTAssertEqual(y, x.map { max($0, 0) })
            h.withUnsafeBufferPointer { hp in
                y.withUnsafeBufferPointer { yp in
                    dx.withUnsafeMutableBufferPointer { dp in
                        guard n > 0 else { return }
                        Vector.reluBackward(yp.baseAddress!, hp.baseAddress!, dp.baseAddress!, n)
                    }
                }
            }
            XCTAssertEqual(dx, zip(y, h).map { $0 > 0 ? $1 : 0 })
        }
    }

    func testTensorReuseKeepsStorageWhenShrinking() {
        var slot: Tensor?
        let a = reuse(&slot, [4, 8])
        let p = a.data
        let b = reuse(&slot, [2, 8])
        XCTAssertTrue(a === b)
        XCTAssertEqual(b.data, p)
        XCTAssertEqual(b.shape, [2, 8])
        XCTAssertEqual(b.count, 16)
        let v = b.reshaped([16])
        XCTAssertEqual(v.data, p)
    }
}
