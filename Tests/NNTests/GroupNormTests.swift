// Group, layer and instance normalisation: gradients against finite differences and the
// forward pass against a direct per-group computation.
@testable import NN
import TensorCore
import TestSupport
import XCTest

final class GroupNormTests: XCTestCase {
    func testGroupNormGradients4D() throws {
        for groups in [1, 2, 4] {
            let gn = try GroupNorm(name: "gn", inputShape: [4, 3, 3], groups: groups)
            let model = makeModel([gn], inputShape: [4, 3, 3])
            checkGradients(model: model, input: randomTensor([2, 4, 3, 3], seed: 30 + UInt64(groups)), context: trainingContext(batch: 2))
        }
    }

    func testLayerNormGradients2D() throws {
        let ln = try GroupNorm(name: "ln", inputShape: [6], groups: 1)
        let model = makeModel([ln], inputShape: [6])
        checkGradients(model: model, input: randomTensor([3, 6], seed: 40), context: trainingContext(batch: 3))
    }

    func testForwardNormalisesEachGroupOfEachSample() throws {
        let gn = try GroupNorm(name: "gn", inputShape: [4, 2, 2], groups: 2)
        let model = Model(layers: [gn], inputShape: [4, 2, 2])
        model.initialize(seed: 1)
        for c in 0..<4 { gn.gamma.value[c] = Float(c + 1); gn.beta.value[c] = Float(c) * 0.5 }
        let x = randomTensor([2, 4, 2, 2], seed: 41, scale: 3)
        let y = try model.forward(x, context: ForwardContext(mode: .evaluation))
        for n in 0..<2 {
            for g in 0..<2 {
                let idx = (0..<8).map { n * 16 + g * 8 + $0 }
                let values = idx.map { Double(x[$0]) }
                let mean = values.reduce(0, +) / 8
                let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 8
                for (k, i) in idx.enumerated() {
                    let ch = g * 2 + k / 4
                    let expected = Double(ch + 1) * (values[k] - mean) / (variance + 1e-5).squareRoot() + Double(ch) * 0.5
                    XCTAssertEqual(Double(y[i]), expected, accuracy: 1e-4)
                }
            }
        }
    }
}
