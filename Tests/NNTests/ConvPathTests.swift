// Conv2D takes two paths: batched im2col chunks with a transposition (small output planes) and
// one sample per GEMM written straight into NCHW (planes of 512 or more). Both are checked.
@testable import NN
import TensorCore
import TestSupport
import XCTest

final class ConvPathTests: XCTestCase {
    func testLargePlanePathGradients() throws {
        let conv = try Conv2D(name: "conv", inputShape: [1, 24, 24], outChannels: 2, kernel: 3, padding: 1)
        XCTAssertEqual(conv.chunkSize, 1, "a 24×24 output plane should take the one-sample path")
        let model = makeModel([conv], inputShape: [1, 24, 24])
        checkGradients(model: model, input: randomTensor([2, 1, 24, 24], seed: 50), context: trainingContext(batch: 2))
    }

    func testBothPathsAgree() throws {
        // The one-sample path against a direct convolution computed here (LayerGradientTests
        // checks the chunked path against its own direct reference).
        let conv = try Conv2D(name: "conv", inputShape: [2, 23, 23], outChannels: 3, kernel: 3, stride: 1, padding: 1)
        XCTAssertEqual(conv.chunkSize, 1)
        let model = makeModel([conv], inputShape: [2, 23, 23])
        let x = randomTensor([3, 2, 23, 23], seed: 51)
        let y = try model.forward(x, context: trainingContext(batch: 3))
        let w = conv.weight.value!, b = conv.bias!.value!
        for n in 0..<3 {
            for o in 0..<3 {
                for (i, j) in [(0, 0), (5, 17), (22, 22), (11, 0)] {
                    var s = Double(b[o])
                    for c in 0..<2 {
                        for kh in 0..<3 {
                            for kw in 0..<3 {
                                let ih = i - 1 + kh, iw = j - 1 + kw
                                guard ih >= 0, ih < 23, iw >= 0, iw < 23 else { continue }
                                s += Double(w[((o * 2 + c) * 3 + kh) * 3 + kw]) * Double(x[((n * 2 + c) * 23 + ih) * 23 + iw])
                            }
                        }
                    }
                    XCTAssertEqual(Double(y[((n * 3 + o) * 23 + i) * 23 + j]), s, accuracy: 1e-4)
                }
            }
        }
    }
}
