// The 2×2, stride-2 max pooling fast path (CKernels, vectorised by clang) and its gradient
// against the pooling definition written out per element, bit for bit.
import NN
import TensorCore
import TestSupport
import XCTest

final class MaxPoolTests: XCTestCase {
    /// Forward values and backward gradients on planes with odd and even sides and widths that
    /// leave 0-3 outputs after the four-wide loop; the input has ties (values rounded to halves),
    /// a NaN, and negative values, and the gradient has −0 entries.
    func testTwoByTwoPathMatchesDefinitionBitForBit() throws {
        for (h, w) in [(4, 4), (5, 7), (28, 28), (14, 14), (3, 18), (9, 11)] {
            let c = 3, n = 2, ho = h / 2, wo = w / 2
            let pool = try MaxPool2D(name: "pool", inputShape: [c, h, w], size: 2)
            let rng = Philox(seed: 5).stream(.test, h, w)
            var xs = (0..<(n * c * h * w)).map { (rng.normal($0) * 2).rounded() / 2 }
            xs[w + 1] = .nan
            let gs = (0..<(n * c * ho * wo)).map { $0 % 5 == 0 ? -0.0 : rng.normal(50_000 + $0) }
            let x = Tensor(zeros: [n, c, h, w]), g = Tensor(zeros: [n, c, ho, wo])
            for i in 0..<xs.count { x.data[i] = xs[i] }
            for i in 0..<gs.count { g.data[i] = gs[i] }
            let y = try pool.forward(x, context: ForwardContext(mode: .training))
            let dx = try XCTUnwrap(try pool.backward(g, needInputGradient: true))
            // The definition: the first strictly greatest of (0,0), (0,1), (1,0), (1,1) wins; its
            // input gets 0 + g, every other input 0.
            var expectedY = [Float](repeating: 0, count: gs.count), expectedDx = [Float](repeating: 0, count: xs.count)
            for p in 0..<(n * c) { for oh in 0..<ho { for ow in 0..<wo {
                var best = p * h * w + 2 * oh * w + 2 * ow
                for (dh, dw) in [(0, 1), (1, 0), (1, 1)] {
                    let i = p * h * w + (2 * oh + dh) * w + 2 * ow + dw
                    if xs[i] > xs[best] { best = i }
                }
                let k = (p * ho + oh) * wo + ow
                expectedY[k] = xs[best]
                expectedDx[best] += gs[k]
            } } }
            XCTAssertEqual(y.array.map { $0.bitPattern }, expectedY.map { $0.bitPattern }, "forward \(h)x\(w)")
            XCTAssertEqual(dx.array.map { $0.bitPattern }, expectedDx.map { $0.bitPattern }, "backward \(h)x\(w)")
        }
    }
}
