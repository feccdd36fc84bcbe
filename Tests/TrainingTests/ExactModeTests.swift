// Exact mode: parameters, buffers, optimizer state and evaluation have the same bits on any
// number of ranks (thread ranks here; mpirun in MPIIntegrationTests), whatever sgemm kernel
// OpenBLAS picked, because no float sum depends on how samples are spread over ranks.
import Collectives
import Configuration
import Datasets
import NN
import TensorCore
@testable import Training
import TrainingTestSupport
import XCTest

/// Everything a checkpoint holds as tensors, as bit patterns: parameters, buffers, optimizer state.
func stateBits(_ trainer: Trainer) -> [UInt32] {
    (Array(trainer.model.parameters.flatValues) + Array(trainer.model.buffers.flatValues)
        + trainer.optimizer.state.flatMap { Array($0.values) }).map(\.bitPattern)
}

final class ExactModeTests: XCTestCase {
    /// Chunks of 4 samples: a global batch of 24 is 6 chunks (3 per micro-batch with accumulation
    /// 2), so 4 ranks hold uneven shares and at 8 ranks some hold none.
    let exact = ["train.exact=true", "train.chunk=4"]

    func train(_ yaml: String, ranks: Int, overrides: [String], data: TrainingData) throws -> [UInt32] {
        let config = try TrainingConfig.parse(yaml: yaml, file: "exact.yaml", overrides: exact + overrides)
        let results = try ThreadCommunicator.run(size: ranks) { comm -> [UInt32] in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            try trainer.run()
            XCTAssertEqual(trainer.step, 50)
            return stateBits(trainer)
        }
        for r in results.dropFirst() { XCTAssertTrue(r == results[0], "replicas differ at \(ranks) ranks") }
        return results[0]
    }

    func assertSameBitsOnAnyWorldSize(_ yaml: String, overrides: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws {
        let data = makeData()
        let one = try train(yaml, ranks: 1, overrides: overrides, data: data)
        for ranks in [2, 3, 4, 8] {
            let many = try train(yaml, ranks: ranks, overrides: overrides, data: data)
            XCTAssertEqual(many.count, one.count, file: file, line: line)
            let differing = zip(one, many).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(differing) of \(one.count) values differ at \(ranks) ranks from 1 rank", file: file, line: line)
        }
    }

    func testMLPWithAdamHasTheSameBitsOnOneToEightRanks() throws {
        try assertSameBitsOnAnyWorldSize(smallMLPConfig())
    }

    func testCNNWithSyncBNDropoutAugmentationAccumulationAndClippingHasTheSameBits() throws {
        // smallCNNConfig has SyncBN in 4-D and 2-D, dropout, flips and crops.
        try assertSameBitsOnAnyWorldSize(smallCNNConfig(), overrides: ["train.max_steps=50", "train.epochs=5",
                                                                       "train.accumulate_steps=2", "optimizer.clip_norm=0.5"])
    }

    func testResidualNetworkFromConfigHasTheSameBits() throws {
        // A residual block with sync BN inside and a projected, strided one: the block's inner
        // layers and shortcut follow the same chunks and slots.
        let yaml = """
        name: small-resnet
        data: {path: /nonexistent, classes: 4, augment: {horizontal_flip: true}}
        model:
          - conv: {out: 4, kernel: 3, padding: 1, bias: false}
          - batchnorm: {}
          - relu
          - residual:
              layers:
                - conv: {out: 4, kernel: 3, padding: 1, bias: false}
                - batchnorm: {}
                - relu
                - conv: {out: 4, kernel: 3, padding: 1, bias: false}
                - batchnorm: {}
          - relu
          - residual:
              layers:
                - conv: {out: 8, kernel: 3, stride: 2, padding: 1, bias: false}
                - batchnorm: {}
              projection: auto
          - relu
          - global_avgpool
          - flatten
          - dense: {out: 4}
        optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
        train: {epochs: 5, max_steps: 50, global_batch: 24, seed: 3, log_every: 0}
        """
        try assertSameBitsOnAnyWorldSize(yaml)
    }

    func testEvaluationHasTheSameBitsOnAnyRanksAndEvalBatch() throws {
        let data = makeData(testCount: 61)   // 16 chunks of 4, the last one short
        var reference: EvaluationResult?
        for (ranks, evalBatch) in [(1, 1000), (1, 5), (3, 12), (8, 4), (4, 1)] {
            let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "exact.yaml",
                                                  overrides: exact + ["data.eval_batch=\(evalBatch)"])
            let results = try ThreadCommunicator.run(size: ranks) { comm -> EvaluationResult in
                try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false)).evaluate()
            }
            for r in results {
                XCTAssertEqual(r.count, 61)
                guard let reference else { continue }
                XCTAssertEqual(r.loss.bitPattern, reference.loss.bitPattern, "\(ranks) ranks, eval_batch \(evalBatch)")
                XCTAssertEqual(r.expectedCalibrationError.bitPattern, reference.expectedCalibrationError.bitPattern)
                XCTAssertEqual(r.perClassCorrect, reference.perClassCorrect)
            }
            if reference == nil { reference = results[0] }
        }
    }

    func testExactModeRunsOneBLASThreadPerRank() throws {
        let before = blasThreadCount()
        defer { setBLASThreadCount(before) }
        setBLASThreadCount(2)
        let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "exact.yaml", overrides: exact)
        _ = try Trainer(config: config, communicator: SingleProcessCommunicator(), data: makeData(), console: Console(isEnabled: false))
        XCTAssertEqual(blasThreadCount(), 1, "a threaded sgemm may split sums differently; exact mode pins one thread")
    }
}

/// The reduced gradient against a float64 reference, and across ranks.
final class ExactGradientTests: XCTestCase {
    let samples = 37, inputs = 40, outputs = 24, chunk = 8   // 5 chunks, the last of 5 samples

    /// dW and db of a dense layer from `rows` of (x, dY), reduced over `ranks` thread ranks holding
    /// whole chunks each, by a reducer that starts from `scaleMaxima`; also the passes it took.
    func reducedGradient(ranks: Int, x: [Float], dy: [Float], scaleMaxima: [Float]? = nil) throws -> (grads: [Float], passes: Int, maxima: [Float]) {
        let (samples, inputs, outputs, chunk) = (self.samples, self.inputs, self.outputs, self.chunk)
        let chunks = (samples + chunk - 1) / chunk
        return try ThreadCommunicator.run(size: ranks) { comm -> ([Float], Int, [Float]) in
            let dense = try Dense(name: "dense1", inputShape: [inputs], outFeatures: outputs)
            let model = Model(layers: [dense], inputShape: [inputs])
            let mine = GlobalBatchSampler.shard(total: samples, chunk: chunk, rank: comm.rank, worldSize: comm.size)
            let n = mine.count
            let chunking = Chunking(size: chunk)
            let reducer = ExactGradientReducer(arena: model.parameters)
            reducer.scaleMaxima = scaleMaxima
            let input = Tensor(shape: [n, inputs], values: Array(x[(mine.lowerBound * inputs)..<(mine.upperBound * inputs)]))
            var passes = 0
            while true {
                passes += 1
                model.parameters.useChunkSlots(max(chunking.count(n), 1))
                model.parameters.zeroSlots(chunking.count(n))
                reducer.begin(slotCount: chunking.count(n), totalChunks: chunks, words: 0, bucketBytes: 0, communicator: comm)
                _ = try model.forward(input, context: ForwardContext(mode: .training, chunking: chunking))
                try model.backward(Tensor(shape: [n, outputs], values: Array(dy[(mine.lowerBound * outputs)..<(mine.upperBound * outputs)])))
                var extras: [Int64] = []
                if try !reducer.finish(stop: false, extras: &extras).retry { break }
                XCTAssertLessThan(passes, 3, "a pass measured with the values' own maxima must fit")
            }
            return (Array(model.parameters.flatGrads), passes, reducer.scaleMaxima ?? [])
        }[0]
    }

    /// A gradient that outgrows the previous step's scale by more than 2^growthBits is measured
    /// again (two passes), and ends with the bits of a reducer that had no scales at all; one
    /// that stays within the headroom takes one pass.
    func testAGradientThatOutgrowsItsScaleIsMeasuredAgainWithTheSameBits() throws {
        let rng = Philox(seed: 12).stream(.test, 4, 0)
        let x = (0..<(samples * inputs)).map { rng.normal($0) }
        let dy = (0..<(samples * outputs)).map { rng.normal(100_000 + $0) * 1e-3 }
        let fresh = try reducedGradient(ranks: 1, x: x, dy: dy)
        XCTAssertEqual(fresh.passes, 2, "no scales yet: a measuring pass, then the real one")
        // Scales from a gradient 2^10 smaller: the values no longer fit.
        let tiny = [Float](repeating: 0x1p-10 * (fresh.grads.map(abs).max() ?? 1), count: 2)
        let grown = try reducedGradient(ranks: 2, x: x, dy: dy, scaleMaxima: tiny)
        XCTAssertEqual(grown.passes, 2)
        XCTAssertEqual(grown.grads.map(\.bitPattern), fresh.grads.map(\.bitPattern))
        // Scales from this very gradient's maxima (what the second pass used): one pass, same bits.
        let again = try reducedGradient(ranks: 3, x: x, dy: dy, scaleMaxima: fresh.maxima)
        XCTAssertEqual(again.passes, 1)
        XCTAssertEqual(again.grads.map(\.bitPattern), fresh.grads.map(\.bitPattern))
    }

    func testGradientIsWithinTheStatedBoundOfAFloat64ReferenceAndTheSameOnAnyRanks() throws {
        let rng = Philox(seed: 11).stream(.test, 4, 0)
        let x = (0..<(samples * inputs)).map { rng.normal($0) * (($0 % 5 == 0) ? 30 : 1) }
        let dy = (0..<(samples * outputs)).map { rng.normal(100_000 + $0) * 1e-3 }
        let got = try reducedGradient(ranks: 1, x: x, dy: dy).grads
        // Reference in Double: dW[o][i] = Σ_s dy[s][o]·x[s][i], db[o] = Σ_s dy[s][o].
        let u = 0x1p-24, gamma = Double(chunk) * u / (1 - Double(chunk) * u)
        var chunkMax = 0.0
        var reference = [Double](repeating: 0, count: outputs * inputs + outputs)
        var magnitude = reference   // Σ|dy|·|x|: the scale of a float GEMM's error
        for o in 0..<outputs {
            for i in 0...inputs {   // i == inputs: the bias
                for c in stride(from: 0, to: samples, by: chunk) {
                    var partial = 0.0
                    for s in c..<min(c + chunk, samples) {
                        let xv = i == inputs ? 1 : Double(x[s * inputs + i]), g = Double(dy[s * outputs + o])
                        partial += g * xv
                        magnitude[i == inputs ? outputs * inputs + o : o * inputs + i] += abs(g * xv)
                    }
                    reference[i == inputs ? outputs * inputs + o : o * inputs + i] += partial
                    chunkMax = max(chunkMax, abs(partial))
                }
            }
        }
        // Bound, per element: each chunk's float32 sum of 8 products (a fused multiply-add chain,
        // or the bias's sum) is within γ_8·Σ|terms| (Higham, Accuracy and Stability, §3.1); the
        // fixed-point sum of 5 chunks rounds each to a unit of at most 2^(3+6+1−50)·max|chunk
        // value| (h = 3 bits for 5 chunks, growthBits = 6 of headroom, budget 50; ExactSum.swift),
        // so adds at most 5·2^-41·max; the result is rounded to float (half an ulp). The chunk
        // maxima per tensor are at most the overall chunkMax.
        for k in reference.indices {
            let bound = gamma * magnitude[k] + 5 * 0x1p-41 * chunkMax * (1 + gamma) + Double(Float(reference[k]).ulp) / 2
            XCTAssertLessThanOrEqual(abs(Double(got[k]) - reference[k]), bound, "element \(k)")
        }
        for ranks in [2, 3, 5] {
            let many = try reducedGradient(ranks: ranks, x: x, dy: dy).grads
            XCTAssertEqual(many.map(\.bitPattern), got.map(\.bitPattern), "\(ranks) ranks")
        }
    }
}
