// SyncBatchNorm across thread ranks must equal plain BatchNorm on the concatenated global batch,
// also when ranks hold unequal parts of it (including none).
import Collectives
import Foundation
import NN
import TensorCore
import TestSupport
import XCTest

/// What one rank (or the single-process reference) produced.
struct BatchNormRun {
    var output: [Float]
    var inputGradient: [Float]
    var gammaGradient: [Float]
    var betaGradient: [Float]
    var runningMean: [Float]
    var runningVar: [Float]
}

final class SyncBatchNormTests: XCTestCase {
    let gammaValues: [Float] = [1.5, -0.75, 0.5]
    let betaValues: [Float] = [0.25, -1.0, 2.0]

    /// Sets γ and β to fixed non-trivial values (the same on every rank and in the reference).
    func prepare(_ bn: BatchNorm, channels: Int) {
        setValues(bn.gamma, Array(gammaValues.prefix(channels)))
        setValues(bn.beta, Array(betaValues.prefix(channels)))
    }

    /// One training forward and backward of `bn` (wrapped in a Model) on `x` with upstream gradient `dy`.
    func runStep(_ bn: BatchNorm, x: Tensor, dy: Tensor) throws -> BatchNormRun {
        let model = Model(layers: [bn], inputShape: bn.inputShape)
        model.initialize(seed: 3)
        prepare(bn, channels: bn.inputShape[0])
        model.zeroGrads()
        let context = ForwardContext(mode: .training, seed: 1, epoch: 0, sampleIndices: Array(0..<x.shape[0]))
        let y = try model.forward(x, context: context).array
        // Model.backward skips the input gradient of its first layer, so call the layer directly.
        let dx = try bn.backward(dy, needInputGradient: true)
        return BatchNormRun(output: y, inputGradient: dx?.array ?? [],
                            gammaGradient: Array(bn.gamma.grads), betaGradient: Array(bn.beta.grads),
                            runningMean: Array(bn.runningMean.values), runningVar: Array(bn.runningVar.values))
    }

    func checkAgainstGlobalBatch(sampleShape: [Int], sizes: [Int], file: StaticString = #filePath, line: UInt = #line) throws {
        let total = sizes.reduce(0, +)
        let x = randomTensor([total] + sampleShape, seed: 80, scale: 2)
        for i in 0..<x.count { x[i] += 0.5 }
        let dy = randomTensor([total] + sampleShape, seed: 81)
        let offsets = sizes.indices.map { sizes[..<$0].reduce(0, +) }

        let reference = try runStep(try BatchNorm(name: "bn", inputShape: sampleShape), x: x, dy: dy)

        let perRank = try ThreadCommunicator.run(size: sizes.count) { comm -> BatchNormRun in
            let range = offsets[comm.rank]..<(offsets[comm.rank] + sizes[comm.rank])
            let bn = try SyncBatchNorm(name: "bn", inputShape: sampleShape, communicator: comm)
            return try self.runStep(bn, x: rows(x, range), dy: rows(dy, range))
        }
        XCTAssertEqual(perRank.count, sizes.count, file: file, line: line)
        for (r, result) in perRank.enumerated() {
            let inner = sampleShape.reduce(1, *)
            XCTAssertEqual(result.output.count, sizes[r] * inner, "rank \(r) output size", file: file, line: line)
            XCTAssertEqual(result.inputGradient.count, sizes[r] * inner, "rank \(r) input-gradient size", file: file, line: line)
        }
        // Float sums per sample are identical; only the order of Double additions differs, so the
        // results agree to float32 rounding. 1e-5 relative (absolute below 1) leaves ~100 ulp.
        let label = "sizes \(sizes), sample shape \(sampleShape)"
        assertClose(perRank.flatMap { $0.output }, reference.output, tolerance: 1e-5,
                    "concatenated outputs, \(label)", file: file, line: line)
        assertClose(perRank.flatMap { $0.inputGradient }, reference.inputGradient, tolerance: 1e-5,
                    "concatenated input gradients, \(label)", file: file, line: line)
        let channels = sampleShape[0]
        var gammaSum = [Float](repeating: 0, count: channels), betaSum = [Float](repeating: 0, count: channels)
        for result in perRank {
            for c in 0..<channels { gammaSum[c] += result.gammaGradient[c]; betaSum[c] += result.betaGradient[c] }
        }
        assertClose(gammaSum, reference.gammaGradient, tolerance: 1e-5, "γ gradient summed over ranks, \(label)",
                    file: file, line: line)
        assertClose(betaSum, reference.betaGradient, tolerance: 1e-5, "β gradient summed over ranks, \(label)",
                    file: file, line: line)
        for (r, result) in perRank.enumerated() {
            assertClose(result.runningMean, reference.runningMean, tolerance: 1e-5, "rank \(r) running mean, \(label)",
                        file: file, line: line)
            assertClose(result.runningVar, reference.runningVar, tolerance: 1e-5, "rank \(r) running variance, \(label)",
                        file: file, line: line)
        }
        // The reference itself must be non-trivial: normalised outputs, a non-zero input gradient.
        XCTAssertGreaterThan(maxAbs(reference.inputGradient), 0.05, file: file, line: line)
        XCTAssertNotEqual(reference.runningVar, [Float](repeating: 1, count: channels), file: file, line: line)
    }

    func testUnequalShards2D() throws {
        try checkAgainstGlobalBatch(sampleShape: [3], sizes: [3, 0, 5, 2])
    }

    func testUnequalShards4D() throws {
        try checkAgainstGlobalBatch(sampleShape: [2, 2, 3], sizes: [3, 0, 5, 2])
    }

    func testTwoRanks4D() throws {
        try checkAgainstGlobalBatch(sampleShape: [3, 2, 2], sizes: [1, 3])
    }

    func testOneRankEqualsBatchNorm() throws {
        try checkAgainstGlobalBatch(sampleShape: [2], sizes: [6])
    }

    /// Local batch norm on 2 ranks normalises each half with its own statistics: the concatenated
    /// result must differ from the global one (so that the tests above can fail), while the
    /// ModelBuilder's sync mode reproduces it.
    func testLocalBatchNormDiffersFromGlobal() throws {
        let sampleShape = [3]
        let sizes = [4, 6]
        let total = 10
        let x = randomTensor([total, 3], seed: 82, scale: 2)
        for i in 0..<(4 * 3) { x[i] += 1 }   // the halves have clearly different means
        let dy = randomTensor([total, 3], seed: 83)
        let reference = try runStep(try BatchNorm(name: "bn", inputShape: sampleShape), x: x, dy: dy)

        func distributed(_ mode: BatchNormMode) throws -> [BatchNormRun] {
            try ThreadCommunicator.run(size: 2) { comm -> BatchNormRun in
                let model = try ModelBuilder(batchNormMode: mode, communicator: comm)
                    .build([.batchNorm(momentum: 0.1, epsilon: 1e-5)], inputShape: sampleShape)
                guard let bn = model.layers.first as? BatchNorm else { throw ShapeError("not a batch norm") }
                // (Assertions stay on the test's thread: a thrown error fails the test from here.)
                guard (bn is SyncBatchNorm) == (mode == .sync) else {
                    throw ShapeError("ModelBuilder built \(type(of: bn)) for batch-norm mode \(mode)")
                }
                let range = (comm.rank == 0 ? 0 : sizes[0])..<(comm.rank == 0 ? sizes[0] : total)
                return try self.runStep(bn, x: rows(x, range), dy: rows(dy, range))
            }
        }

        let local = try distributed(.local)
        let localOutput = local.flatMap { $0.output }
        XCTAssertGreaterThan(maxAbsDifference(localOutput, reference.output), 0.1,
                             "local statistics must give a different normalisation than global ones")
        XCTAssertGreaterThan(maxAbsDifference(local[0].runningMean, local[1].runningMean), 0.01,
                             "local running means differ between ranks")

        let sync = try distributed(.sync)
        assertClose(sync.flatMap { $0.output }, reference.output, tolerance: 1e-5, "sync outputs")
        assertClose(sync.flatMap { $0.inputGradient }, reference.inputGradient, tolerance: 1e-5, "sync input gradients")
        XCTAssertEqual(sync[0].runningMean, sync[1].runningMean, "sync running statistics are identical on every rank")
        XCTAssertEqual(sync[0].runningVar, sync[1].runningVar)
    }

    func testEvaluationModeIsLocalAndUsesRunningStatistics() throws {
        // In evaluation no collective runs: ranks with different batch sizes (one empty) must not block.
        let results = try ThreadCommunicator.run(size: 3) { comm -> [Float] in
            let bn = try SyncBatchNorm(name: "bn", inputShape: [2], communicator: comm)
            let model = Model(layers: [bn], inputShape: [2])
            model.initialize(seed: 0)
            setValues(bn.runningMean, [1, -1])
            setValues(bn.runningVar, [4, 1])
            let n = comm.rank   // 0, 1 or 2 samples
            let x = Tensor(zeros: [n, 2])
            x.fill(3)
            return try model.forward(x, context: ForwardContext(mode: .evaluation)).array
        }
        XCTAssertEqual(results[0], [])
        let eps: Float = 1e-5
        let expected: [Float] = [(3 - 1) / (4 + eps).squareRoot(), (3 + 1) / (1 + eps).squareRoot()]
        assertClose(results[1], expected, tolerance: 1e-6)
        assertClose(results[2], expected + expected, tolerance: 1e-6)
    }
}
