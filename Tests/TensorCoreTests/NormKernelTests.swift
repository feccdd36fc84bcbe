// Batch norm's plane kernels (CKernels norm.c): every level against a scalar Swift reference of
// the same arithmetic (16 lanes, the fixed fold, the tail in order), bit for bit; and the kernels
// with a ReLU and a 2×2 max pool fused in against the separate layers' arithmetic, written here
// as plain loops (normalise, rectify, first-of-equals max, scatter into zeros, mask).
import CKernels
import TensorCore
import TestSupport
import XCTest

/// The 16-lane sum the kernels define: lane l adds terms l, l+16, ...; the lanes fold as
/// (l + l+8), (+4), (+2), (+1); the terms past the last 16 follow in order.
func sixteenLaneSum(_ n: Int, _ term: (Int) -> Float) -> Float {
    var lanes = [Float](repeating: 0, count: 16)
    let whole = n / 16 * 16
    for i in 0..<whole { lanes[i % 16] += term(i) }
    var w = 8
    while w >= 1 { for i in 0..<w { lanes[i] = lanes[i] + lanes[i + w] }; w /= 2 }
    var s = lanes[0]
    for i in whole..<n { s += term(i) }
    return s
}

final class NormKernelTests: XCTestCase {
    var levels: [Int32] { (0...2).map(Int32.init).filter { lockstep_kernel_level_supported($0) != 0 } }

    func testBatchNormKernelsAreTheScalarReferenceAtEveryLevel() {
        for n in [1, 15, 16, 49, 196, 784, 801] {
            let x = randomTensor([n], seed: UInt64(n)).array, dy = randomTensor([n], seed: UInt64(n) + 1).array
            let mask = randomTensor([n], seed: UInt64(n) + 2).array   // about half ≤ 0
            let mean: Float = 0.07, inv: Float = 1.9, shift: Float = -0.03
            func xhat(_ i: Int) -> Float { (x[i] - mean) * inv }
            func g(_ i: Int) -> Float { mask[i] > 0 ? dy[i] : 0 }
            let moments = (sixteenLaneSum(n) { x[$0] - shift }, sixteenLaneSum(n) { (x[$0] - shift) * (x[$0] - shift) })
            let sums = (sixteenLaneSum(n, g), sixteenLaneSum(n) { g($0) * xhat($0) })
            let forward = (0..<n).map { i -> Float in let o = 1.3 * xhat(i) + 0.2; return o < 0 ? 0 : o }
            let dx = (0..<n).map { i in 0.6 * (g(i) - 0.01 - xhat(i) * 0.3) }
            for level in levels {
                var o: [Float] = [0, 0], y = [Float](repeating: .nan, count: n), d = y
                lockstep_plane_moments(level, x, n, shift, &o)
                XCTAssertEqual(o.map(\.bitPattern), [moments.0, moments.1].map(\.bitPattern), "moments, n \(n), level \(level)")
                lockstep_bn_gradient_sums(level, dy, x, mask, n, mean, inv, &o)
                XCTAssertEqual(o.map(\.bitPattern), [sums.0, sums.1].map(\.bitPattern), "gradient sums, n \(n), level \(level)")
                lockstep_bn_forward(level, x, &y, n, mean, inv, 1.3, 0.2, 1)
                XCTAssertEqual(y.map(\.bitPattern), forward.map(\.bitPattern), "forward, n \(n), level \(level)")
                lockstep_bn_input_gradient(level, dy, x, mask, &d, n, mean, inv, 0.6, 0.01, 0.3)
                XCTAssertEqual(d.map(\.bitPattern), dx.map(\.bitPattern), "input gradient, n \(n), level \(level)")
            }
        }
    }

    func testFusedPoolKernelsAreTheSeparateLayersAtEveryLevel() throws {
        // Planes whose pooled rows end mid-vector (7, 17, 3 outputs), a single window, and the
        // CNN's and the ResNet's own 28 × 28 and 14 × 14.
        var dead = 0, windows = 0
        for (h, w) in [(2, 2), (4, 6), (14, 14), (28, 28), (6, 34), (8, 2), (10, 16)] {
            let n = h * w, ho = h / 2, wo = w / 2, no = ho * wo
            let seed = UInt64(n)
            var x = randomTensor([n], seed: seed).array
            x[0] = x[1]   // ties in the first window: the first of equals is chosen
            let gp = randomTensor([no], seed: seed + 1).array
            let mean: Float = 0.07, inv: Float = 1.9, gamma: Float = 1.3, beta: Float = -0.9, k: Float = 0.6   // about 1 window in 4 all ≤ 0
            // The separate layers: y = relu(γ·x̂ + β), then the pool, then its gradient scattered into
            // zeros and masked by y > 0 at the chosen place.
            func xhat(_ i: Int) -> Float { (x[i] - mean) * inv }
            let y = (0..<n).map { i -> Float in let o = gamma * xhat(i) + beta; return o < 0 ? 0 : o }
            var pooled = [Float](repeating: 0, count: no), chosen = [Int](repeating: 0, count: no)
            for oh in 0..<ho {
                for ow in 0..<wo {
                    let q = [2 * oh * w + 2 * ow, 2 * oh * w + 2 * ow + 1, (2 * oh + 1) * w + 2 * ow, (2 * oh + 1) * w + 2 * ow + 1]
                    var best = y[q[0]], at = q[0]
                    for j in q.dropFirst() where y[j] > best { best = y[j]; at = j }
                    pooled[oh * wo + ow] = best
                    chosen[oh * wo + ow] = at
                }
            }
            var dy = [Float](repeating: 0, count: n)
            for p in 0..<no { dy[chosen[p]] += gp[p] }
            func g(_ i: Int) -> Float { y[i] > 0 ? dy[i] : 0 }
            let sums = [sixteenLaneSum(n, g), sixteenLaneSum(n) { g($0) * xhat($0) }]
            let dx = (0..<n).map { i in k * (g(i) - 0.01 - xhat(i) * 0.3) }
            dead += pooled.filter { !($0 > 0) }.count
            windows += no
            for level in levels {
                var scratch = [Float](repeating: .nan, count: lockstep_bn_pool_scratch_floats(h, w))
                var out = [Float](repeating: .nan, count: no), xmax = out, code = [UInt8](repeating: 9, count: no)
                lockstep_bn_forward_pool(level, x, h, w, mean, inv, gamma, beta, &scratch, &out, &code, &xmax)
                XCTAssertEqual(out.map(\.bitPattern), pooled.map(\.bitPattern), "pooled output, \(h)×\(w), level \(level)")
                XCTAssertEqual(xmax.map(\.bitPattern), chosen.map { x[$0].bitPattern }, "x at the max, \(h)×\(w), level \(level)")
                let expected = (0..<no).map { p -> UInt8 in
                    let q = chosen[p], at = UInt8((q / w) % 2 * 2 + q % 2)
                    return pooled[p] > 0 ? at : at + 4
                }
                XCTAssertEqual(code, expected, "window choices, \(h)×\(w), level \(level)")
                var o: [Float] = [0, 0], d = [Float](repeating: .nan, count: n)
                scratch = [Float](repeating: .nan, count: scratch.count)   // no help from the forward pass's leftovers
                lockstep_bn_pool_gradient_sums(level, gp, code, xmax, h, w, mean, inv, &scratch, &o)
                XCTAssertEqual(o.map(\.bitPattern), sums.map(\.bitPattern), "gradient sums, \(h)×\(w), level \(level)")
                lockstep_bn_pool_input_gradient(level, gp, code, x, &d, h, w, mean, inv, k, 0.01, 0.3, &scratch)
                XCTAssertEqual(d.map(\.bitPattern), dx.map(\.bitPattern), "input gradient, \(h)×\(w), level \(level)")
            }
        }
        XCTAssert(dead > windows / 10 && dead < windows * 9 / 10, "guards the masks: some windows pass no gradient (\(dead) of \(windows))")
    }
}
