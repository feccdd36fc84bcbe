// Conv2D with Winograd: finite-difference gradients for both tiles, batch-invariance of each chunk
// (exact mode's requirement), chunk slots that sum to the whole batch's gradient, the `auto`
// rule, and a clear error for a Winograd choice that does not apply.
@testable import NN
import TensorCore
import TestSupport
import XCTest

final class WinogradConvTests: XCTestCase {
    func testWinogradLayersPassFiniteDifferenceChecks() throws {
        for algorithm in [ConvAlgorithm.winograd, .winogradF2] {
            for (shape, padding, bias) in [([3, 6, 7], 1, true), ([2, 5, 5], 0, false), ([2, 4, 4], 2, true)] {
                let conv = try Conv2D(name: "conv", inputShape: shape, outChannels: 3, kernel: 3, padding: padding,
                                      bias: bias, algorithm: algorithm)
                XCTAssertEqual(conv.winogradTile, algorithm == .winograd ? 4 : 2)
                let model = makeModel([conv], inputShape: shape)
                checkGradients(model: model, input: randomTensor([2] + shape, seed: 60), context: trainingContext(batch: 2))
            }
        }
    }

    /// Forward output, input gradient and the per-chunk gradient slots, for chunks of 2.
    func run(_ model: Model, _ x: Tensor, _ upstream: Tensor, chunk: Int?) throws -> (y: [Float], dx: [Float], slots: [Float]) {
        let n = x.shape[0]
        let chunking = chunk.map { Chunking(size: $0) } ?? .whole
        if let chunk { model.parameters.useChunkSlots((n + chunk - 1) / chunk) }
        model.zeroGrads()
        if let slots = model.parameters.slots { slots.update(repeating: 0) }
        let y = try model.forward(x, context: ForwardContext(mode: .training, sampleIndices: Array(0..<n), chunking: chunking)).array
        let dx = try backwardWithInputGradient(model, upstream).array
        return (y, dx, chunk == nil ? Array(model.parameters.grads!) : Array(model.parameters.slots!))
    }

    func testAChunkHasTheSameBitsWhateverTheOtherChunksHold() throws {
        // 20 channels: a layer `auto` gives F(4,3). A chunk's output, input gradient and gradient
        // slot must not depend on the samples of other chunks (nor on how many there are).
        func layer() throws -> Conv2D { try Conv2D(name: "conv", inputShape: [20, 9, 9], outChannels: 20, kernel: 3, padding: 1, bias: true) }
        XCTAssertEqual(try layer().winogradTile, 4)
        let model = makeModel([try layer()], inputShape: [20, 9, 9])
        let inSize = 20 * 81
        let a = randomTensor([6, 20, 9, 9], seed: 70), da = randomTensor([6, 20, 9, 9], seed: 71)
        let b = randomTensor([4, 20, 9, 9], seed: 72), db = randomTensor([4, 20, 9, 9], seed: 73)
        for i in 0..<(2 * inSize) { b[i] = a[i]; db[i] = da[i] }   // b's first chunk is a's
        let ra = try run(model, a, da, chunk: 2)
        let slotFloats = model.parameters.slotFloats
        let rb = try run(model, b, db, chunk: 2)
        XCTAssertEqual(ra.y[0..<(2 * inSize)].map(\.bitPattern), rb.y[0..<(2 * inSize)].map(\.bitPattern), "output")
        XCTAssertEqual(ra.dx[0..<(2 * inSize)].map(\.bitPattern), rb.dx[0..<(2 * inSize)].map(\.bitPattern), "input gradient")
        XCTAssertEqual(ra.slots[0..<slotFloats].map(\.bitPattern), rb.slots[0..<slotFloats].map(\.bitPattern), "gradient slot")
        XCTAssertNotEqual(ra.slots[slotFloats..<(2 * slotFloats)].map(\.bitPattern),
                          rb.slots[slotFloats..<(2 * slotFloats)].map(\.bitPattern), "guard: other chunks differ")

        // The chunks' slots add up to the whole batch's gradient. Tolerance: each is within
        // 1e-5·Σ|terms| of the exact sum (WinogradTests' F(4,3) bound); with these unit-scale
        // random values Σ|terms| is at most about 20× the gradient's largest entry.
        let whole = try run(makeModel([try layer()], inputShape: [20, 9, 9]), a, da, chunk: nil)   // same seed: same weights
        var summed = [Float](repeating: 0, count: slotFloats)
        for s in 0..<3 { for i in 0..<slotFloats { summed[i] += ra.slots[s * slotFloats + i] } }
        let largest = whole.slots.map(abs).max()!
        XCTAssertTrue(assertClose(summed, Array(whole.slots), tolerance: 2e-4 * largest, relative: false, "slots vs whole batch"))
    }

    func testAutoUsesWinogradForThreeByThreeStrideOneLayersWithSixteenChannelsOrMore() throws {
        func tile(_ shape: [Int], out: Int, kernel: Int = 3, stride: Int = 1, algorithm: ConvAlgorithm = .auto) throws -> Int? {
            try Conv2D(name: "c", inputShape: shape, outChannels: out, kernel: kernel, stride: stride, padding: kernel / 2,
                       algorithm: algorithm).winogradTile
        }
        XCTAssertEqual(try tile([32, 14, 14], out: 64), 4)
        XCTAssertEqual(try tile([16, 7, 7], out: 16), 4)
        XCTAssertNil(try tile([1, 28, 28], out: 32), "one input channel: im2col")
        XCTAssertNil(try tile([15, 8, 8], out: 64), "below 16 channels: im2col")
        XCTAssertNil(try tile([32, 14, 14], out: 64, stride: 2), "stride 2: im2col")
        XCTAssertNil(try tile([32, 14, 14], out: 64, kernel: 5), "5×5: im2col")
        XCTAssertNil(try tile([32, 14, 14], out: 64, algorithm: .direct))
        XCTAssertEqual(try tile([2, 5, 5], out: 3, algorithm: .winogradF2), 2, "explicit: any channel count")
    }

    func testAnExplicitWinogradChoiceThatDoesNotApplyIsAClearError() throws {
        XCTAssertThrowsError(try Conv2D(name: "conv3", inputShape: [8, 8, 8], outChannels: 8, kernel: 3, stride: 2,
                                        padding: 1, algorithm: .winograd)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("conv3") && text.contains("3x3 kernel with stride 1"), text)
        }
        // As a default for every layer (`conv.algorithm`), it falls back where it does not apply.
        let lenient = try Conv2D(name: "conv3", inputShape: [8, 8, 8], outChannels: 8, kernel: 3, stride: 2, padding: 1,
                                 algorithm: .winograd, strictAlgorithm: false)
        XCTAssertNil(lenient.winogradTile)
    }
}
