// Batch norm's plane kernels (CKernels norm.c): every level against a scalar Swift reference of
// the same arithmetic (16 lanes, the fixed fold, the tail in order), bit for bit.
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
}
