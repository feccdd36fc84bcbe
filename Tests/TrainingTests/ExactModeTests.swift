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

    /// A residual block with sync BN inside and a projected, strided one: the block's inner
    /// layers and shortcut follow the same chunks and slots.
    let residualYAML = """
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

    func testResidualNetworkFromConfigHasTheSameBits() throws {
        try assertSameBitsOnAnyWorldSize(residualYAML)
    }

    func testWinogradConvolutionsHaveTheSameBits() throws {
        // Every 3×3 stride-1 convolution through Winograd, forward, input and weight gradient:
        // F(4,3) in the residual network (its strided convolution and 1×1 projection fall back
        // to im2col), F(2,3) in the CNN with accumulation.
        func tiles(_ layers: [Layer]) -> [Int?] {
            layers.flatMap { l -> [Int?] in
                if let c = l as? Conv2D { return [c.winogradTile] }
                if let r = l as? Residual { return tiles(r.inner + r.shortcut) }
                return []
            }
        }
        for (yaml, algorithm, want) in [(residualYAML, "winograd", [4, 4, 4, nil, nil]), (smallCNNConfig(), "winograd-f2", [2])] {
            let config = try TrainingConfig.parse(yaml: yaml, file: "exact.yaml", overrides: exact + ["conv.algorithm=\(algorithm)"])
            let trainer = try Trainer(config: config, communicator: SingleProcessCommunicator(), data: makeData(),
                                      console: Console(isEnabled: false))
            XCTAssertEqual(tiles(trainer.model.layers), want, "guard: the convolutions run Winograd")
        }
        try assertSameBitsOnAnyWorldSize(residualYAML, overrides: ["conv.algorithm=winograd"])
        try assertSameBitsOnAnyWorldSize(smallCNNConfig(), overrides: ["conv.algorithm=winograd-f2", "train.max_steps=50",
                                                                       "train.epochs=5", "train.accumulate_steps=2"])
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
    /// whole chunks each, through shared memory (thread ranks share their memory) or messages.
    func reducedGradient(ranks: Int, x: [Float], dy: [Float], sharedMemory: Bool = true) throws -> [Float] {
        let (samples, inputs, outputs, chunk) = (self.samples, self.inputs, self.outputs, self.chunk)
        let chunks = (samples + chunk - 1) / chunk
        return try ThreadCommunicator.run(size: ranks) { comm -> [Float] in
            let dense = try Dense(name: "dense1", inputShape: [inputs], outFeatures: outputs)
            let model = Model(layers: [dense], inputShape: [inputs])
            let mine = GlobalBatchSampler.shard(total: samples, chunk: chunk, rank: comm.rank, worldSize: comm.size)
            let n = mine.count
            let chunking = Chunking(size: chunk)
            let reducer = ExactGradientReducer(arena: model.parameters, sharedMemory: sharedMemory)
            let input = Tensor(shape: [n, inputs], values: Array(x[(mine.lowerBound * inputs)..<(mine.upperBound * inputs)]))
            model.parameters.useChunkSlots(max(chunking.count(n), 1))
            model.parameters.zeroSlots(chunking.count(n))
            try reducer.beginStep(communicator: comm)
            try reducer.beginMicroBatch(LocalBatch(indices: Array(mine), chunkOffset: 0, globalChunks: chunks,
                                               chunkRun: GlobalBatchSampler.shard(total: chunks, rank: comm.rank, worldSize: comm.size)), bucketBytes: 0)
            _ = try model.forward(input, context: ForwardContext(mode: .training, chunking: chunking))
            try model.backward(Tensor(shape: [n, outputs], values: Array(dy[(mine.lowerBound * outputs)..<(mine.upperBound * outputs)])))
            try reducer.finishMicroBatch()
            // Several ranks sharing memory leave the sum where they all read it, not in each
            // rank's own gradients; sending messages leaves it in the gradients.
            XCTAssertEqual(model.parameters.summedGradientBase != nil, sharedMemory && comm.size > 1)
            return Array(model.parameters.summedGrads)
        }[0]
    }

    func testGradientIsWithinTheStatedBoundOfAFloat64ReferenceAndTheSameOnAnyRanks() throws {
        let rng = Philox(seed: 11).stream(.test, 4, 0)
        let x = (0..<(samples * inputs)).map { rng.normal($0) * (($0 % 5 == 0) ? 30 : 1) }
        let dy = (0..<(samples * outputs)).map { rng.normal(100_000 + $0) * 1e-3 }
        let got = try reducedGradient(ranks: 1, x: x, dy: dy)
        // Reference in Double: dW[o][i] = Σ_s dy[s][o]·x[s][i], db[o] = Σ_s dy[s][o].
        // Each chunk's sum is a chain of at most 8 roundings (fused multiply-adds, or the bias's
        // additions) and the tree over 5 chunks adds ⌈log2 5⌉ = 3 more on any path, so every
        // element is within γ_11·Σ|terms| of the exact sum (ChunkTree.swift; Higham, Accuracy and
        // Stability, §3.1 and §4.2: γ_n = n·u/(1 − n·u), u = 2^-24).
        let u = 0x1p-24, depth = Double(chunk + 3), gamma = depth * u / (1 - depth * u)
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
                }
            }
        }
        var loose = 0   // elements that differ from the Double reference: a test that sees none compares nothing
        for k in reference.indices {
            let error = abs(Double(got[k]) - reference[k])
            XCTAssertLessThanOrEqual(error, gamma * magnitude[k], "element \(k)")
            if error > 0 { loose += 1 }
        }
        XCTAssertGreaterThan(loose, reference.count / 2, "float sums of random data should rarely be exact")
        for ranks in [2, 3, 5] {
            for shared in [true, false] {
                let many = try reducedGradient(ranks: ranks, x: x, dy: dy, sharedMemory: shared)
                XCTAssertEqual(many.map(\.bitPattern), got.map(\.bitPattern), "\(ranks) ranks, shared memory \(shared)")
            }
        }
    }
}

/// The pair case's self-test: it passes on IEEE sums and fails, on both ranks alike, when the
/// all-reduce flushes subnormal results to zero (as a reduction in other arithmetic might).
final class PairSumTests: XCTestCase {
    /// Thread ranks whose float all-reduce flushes subnormal results to zero.
    final class FlushingCommunicator: Communicator {
        let inner: Communicator
        init(_ inner: Communicator) { self.inner = inner }
        var rank: Int { inner.rank }
        var size: Int { inner.size }
        var kind: String { "flushing" }
        var context: String { get { inner.context } set { inner.context = newValue } }
        var collectiveTimeout: Double { get { inner.collectiveTimeout } set { inner.collectiveTimeout = newValue } }
        func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws {
            try inner.allReduce(buffer, op: op)
            for i in buffer.indices where buffer[i].isSubnormal { buffer[i] = 0 }
        }
        func allReduce(_ buffer: UnsafeMutableBufferPointer<Double>, op: ReduceOp) throws { try inner.allReduce(buffer, op: op) }
        func allReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws { try inner.allReduce(buffer, op: op) }
        func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws { try inner.broadcast(buffer, root: root) }
        func barrier() throws { try inner.barrier() }
        func abort(_ message: String) { inner.abort(message) }
    }

    func testIEEESumsPassAndFlushedSubnormalsFailOnBothRanks() throws {
        XCTAssertEqual(try ThreadCommunicator.run(size: 2) { try PairSum.isExact($0) }, [true, true])
        XCTAssertEqual(try ThreadCommunicator.run(size: 2) { try PairSum.isExact(FlushingCommunicator($0)) }, [false, false])
        XCTAssertTrue(zip(PairSum.values(rank: 0), PairSum.values(rank: 1)).contains { ($0 + $1).isSubnormal },
                      "the test values must include a sum that is subnormal")
    }
}
