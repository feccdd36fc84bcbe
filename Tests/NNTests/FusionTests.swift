// Batch norm fused with the ReLU after it (fuseBatchNormReLU), and with a 2×2 max pool after that,
// against the layers run apart: outputs, input gradients and parameter gradients bit for bit, in
// training (whole batch and exact chunks) and evaluation.
@testable import NN
import TensorCore
import TestSupport
import XCTest

final class FusionTests: XCTestCase {
    /// conv → BN → ReLU → flatten → dense → BN → ReLU → dense: the first pair fuses in Model.init
    /// (the second, over features, stays apart).
    func makeModel() throws -> Model {
        let conv = try Conv2D(name: "conv", inputShape: [2, 5, 5], outChannels: 3, kernel: 3, padding: 1)
        let bn1 = try BatchNorm(name: "bn1", inputShape: [3, 5, 5])
        let relu1 = ReLU(name: "relu1", inputShape: [3, 5, 5])
        let flat = Flatten(name: "flat", inputShape: [3, 5, 5])
        let dense = try Dense(name: "dense", inputShape: [75], outFeatures: 13)
        let bn2 = try BatchNorm(name: "bn2", inputShape: [13])
        let relu2 = ReLU(name: "relu2", inputShape: [13])
        let out = try Dense(name: "out", inputShape: [13], outFeatures: 4)
        let model = Model(layers: [conv, bn1, relu1, flat, dense, bn2, relu2, out], inputShape: [2, 5, 5])
        randomizeParameters(model, seed: 8)
        return model
    }

    /// Fuses (or splits) the first pair, conv → BN → ReLU.
    func setFused(_ model: Model, _ on: Bool) {
        (model.layers[1] as? BatchNorm)?.appliesReLU = on
        (model.layers[2] as? ReLU)?.isFused = on
    }

    /// Forward, backward with input gradient, and every gradient slot, as bit patterns.
    func run(_ model: Model, _ x: Tensor, _ upstream: Tensor, chunking: Chunking) throws -> [[UInt32]] {
        let n = x.shape[0]
        model.buffers.initialize(seed: 0)   // the same running statistics before each run
        if let size = chunking.size { model.parameters.useChunkSlots((n + size - 1) / size) }
        model.zeroGrads()
        if let slots = model.parameters.slots { slots.update(repeating: 0) }
        let context = ForwardContext(mode: .training, seed: 1, sampleIndices: Array(0..<n), chunking: chunking)
        let y = try model.forward(x, context: context).array
        let dx = try backwardWithInputGradient(model, upstream).array
        let grads = chunking.size == nil ? Array(model.parameters.grads!) : Array(model.parameters.slots!)
        let eval = try model.forward(x, context: ForwardContext(mode: .evaluation)).array
        return [y, dx, grads, eval].map { $0.map { $0.bitPattern } }
    }

    func testFusedBatchNormReLUHasTheBitsOfSeparateLayers() throws {
        let model = try makeModel()
        let names = model.layers.compactMap { ($0 as? BatchNorm)?.appliesReLU == true ? $0.name : nil }
        XCTAssertEqual(names, ["bn1"], "Model.init fuses each batch norm over channels followed by a ReLU (not over features)")
        let n = 12
        let x = randomTensor([n, 2, 5, 5], seed: 3)
        let upstream = randomTensor([n, 4], seed: 4)
        for chunking in [Chunking.whole, Chunking(size: 4)] {
            setFused(model, true)
            let fused = try run(model, x, upstream, chunking: chunking)
            // Guards the comparison: the ReLU zeroes a good share of the first batch norm's output.
            let bn1 = try XCTUnwrap(model.layers[1] as? BatchNorm)
            let zeros = try XCTUnwrap(bn1.output).array.filter { $0 == 0 }.count
            XCTAssertGreaterThan(zeros, 12 * 75 / 5, "chunks \(String(describing: chunking.size))")
            setFused(model, false)
            let apart = try run(model, x, upstream, chunking: chunking)
            for (k, what) in ["output", "input gradient", "parameter gradients", "evaluation output"].enumerated() {
                XCTAssertEqual(fused[k], apart[k], "\(what), chunks \(String(describing: chunking.size))")
            }
        }
    }

    /// conv → BN → ReLU → 2×2 max pool → conv → BN → ReLU → 2×2 max pool → flatten → dense, on
    /// 8 × 6 planes (pooled rows of 3, then an odd 4 × 3 plane) and a third triple on an odd plane.
    func makePooledModel() throws -> Model {
        let conv1 = try Conv2D(name: "conv1", inputShape: [2, 8, 6], outChannels: 3, kernel: 3, padding: 1)
        let bn1 = try BatchNorm(name: "bn1", inputShape: [3, 8, 6])
        let relu1 = ReLU(name: "relu1", inputShape: [3, 8, 6])
        let pool1 = try MaxPool2D(name: "pool1", inputShape: [3, 8, 6], size: 2)
        let conv2 = try Conv2D(name: "conv2", inputShape: [3, 4, 3], outChannels: 4, kernel: 3, padding: 1)
        let bn2 = try BatchNorm(name: "bn2", inputShape: [4, 4, 3])
        let relu2 = ReLU(name: "relu2", inputShape: [4, 4, 3])
        let pool2 = try MaxPool2D(name: "pool2", inputShape: [4, 4, 3], size: 2)
        let flat = Flatten(name: "flat", inputShape: [4, 2, 1])
        let out = try Dense(name: "out", inputShape: [8], outFeatures: 4)
        let model = Model(layers: [conv1, bn1, relu1, pool1, conv2, bn2, relu2, pool2, flat, out], inputShape: [2, 8, 6])
        randomizeParameters(model, seed: 9)
        return model
    }

    func testFusedBatchNormReLUMaxPoolHasTheBitsOfSeparateLayers() throws {
        let model = try makePooledModel()
        let bn1 = try XCTUnwrap(model.layers[1] as? BatchNorm), pool1 = try XCTUnwrap(model.layers[3] as? MaxPool2D)
        XCTAssertEqual(model.layers.compactMap { ($0 as? BatchNorm)?.poolsMax == true ? $0.name : nil }, ["bn1"],
                       "the pool joins over an even plane only (bn2's is 4 × 3)")
        XCTAssertEqual(fuseBatchNormReLU(try makePooledModel().layers.map { $0 }).count, 0, "Model.init fused them already")
        let n = 12
        let x = randomTensor([n, 2, 8, 6], seed: 5)
        let upstream = randomTensor([n, 4], seed: 6)
        for chunking in [Chunking.whole, Chunking(size: 4)] {
            let fused = try run(model, x, upstream, chunking: chunking)
            // Guards the comparison: a good share of the windows pass no gradient (their max is 0).
            let dead = bn1.codes.prefix(n * 3 * 12).filter { $0 >= 4 }.count
            XCTAssertGreaterThan(dead, n * 3 * 12 / 10, "chunks \(String(describing: chunking.size))")
            XCTAssertEqual(try XCTUnwrap(bn1.output).shape, [n, 3, 4, 3], "the batch norm's output is pooled")
            bn1.poolsMax = false
            pool1.isFused = false
            let apart = try run(model, x, upstream, chunking: chunking)
            bn1.poolsMax = true
            pool1.isFused = true
            for (k, what) in ["output", "input gradient", "parameter gradients", "evaluation output"].enumerated() {
                XCTAssertEqual(fused[k], apart[k], "\(what), chunks \(String(describing: chunking.size))")
            }
        }
    }
}
