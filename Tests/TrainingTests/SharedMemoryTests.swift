// Exact mode's one-host reduction (train.shared_memory): the thread ranks' shared region, the
// reducer's use of it (the bits of one rank, and of the messages, across micro-batches whose
// trees need more room than the last), and a trainer that sends no gradient through messages.
import Collectives
import Configuration
import Datasets
import NN
import TensorCore
@testable import Training
import TrainingTestSupport
import XCTest

final class SharedMemoryTests: XCTestCase {
    func testEveryRankSeesEveryPartAfterAFenceAndAMissingRankIsNamed() throws {
        let seen = try ThreadCommunicator.run(size: 3) { comm -> [Float] in
            guard let region = try comm.sharedRegion(floats: 5) else { XCTFail("thread ranks share memory"); return [] }
            XCTAssertEqual(region.floats, 5)
            for i in 0..<5 { region.base(comm.rank)[i] = Float(comm.rank * 10 + i) }
            try region.fence()
            return (0..<3).flatMap { r in (0..<5).map { region.base(r)[$0] } }
        }
        let want = (0..<3).flatMap { r in (0..<5).map { Float(r * 10 + $0) } }
        for s in seen { XCTAssertEqual(s, want) }
        XCTAssertNil(try ThreadCommunicator.run(size: 1) { try $0.sharedRegion(floats: 5) == nil ? nil : 1 }[0])
        // A rank that never reaches the fence: the others give up at the deadline, naming it.
        XCTAssertThrowsError(try ThreadCommunicator.run(size: 2) { comm -> Int in
            comm.collectiveTimeout = 0.2
            let region = try comm.sharedRegion(floats: 1)
            if comm.rank == 0 { try region?.fence() } else { Thread.sleep(forTimeInterval: 1) }
            return 0
        }) { error in
            XCTAssertTrue("\(error)".contains("rank 1 did not arrive"), "\(error)")
        }
    }

    let inputs = 12, outputs = 5, chunk = 4

    /// A dense layer's gradient over micro-batches of `sizes` samples (one step), reduced by
    /// `ranks` thread ranks holding whole chunks of each, and where the sum was left.
    func reduce(ranks: Int, shared: Bool, sizes: [Int], x: [Float], dy: [Float]) throws -> (sum: [Float], inRegion: Bool) {
        let (inputs, outputs, chunk) = (self.inputs, self.outputs, self.chunk)
        return try ThreadCommunicator.run(size: ranks) { comm -> ([Float], Bool) in
            let model = Model(layers: [try Dense(name: "dense1", inputShape: [inputs], outFeatures: outputs)], inputShape: [inputs])
            let reducer = ExactGradientReducer(arena: model.parameters, sharedMemory: shared)
            var parts: [(samples: Range<Int>, chunks: Range<Int>, total: Int)] = []
            var start = 0
            for n in sizes {
                let total = (n + chunk - 1) / chunk
                let run = GlobalBatchSampler.shard(total: total, rank: comm.rank, worldSize: comm.size)
                let lo = start + min(run.lowerBound * chunk, n), hi = start + min(run.upperBound * chunk, n)
                parts.append((lo..<hi, run, total))
                start += n
            }
            let local = parts.map(\.chunks.count).reduce(0, +)
            model.parameters.useChunkSlots(max(local, 1))
            model.parameters.zeroSlots(local)
            try reducer.beginStep(communicator: comm)
            var offset = 0
            for p in parts {
                try reducer.beginMicroBatch(LocalBatch(indices: Array(p.samples), chunkOffset: offset, globalChunks: p.total, chunkRun: p.chunks), bucketBytes: 0)
                if !p.samples.isEmpty {
                    let n = p.samples.count, s = p.samples
                    let input = Tensor(shape: [n, inputs], values: Array(x[(s.lowerBound * inputs)..<(s.upperBound * inputs)]))
                    _ = try model.forward(input, context: ForwardContext(mode: .training, chunking: Chunking(size: chunk, firstSlot: offset)))
                    try model.backward(Tensor(shape: [n, outputs], values: Array(dy[(s.lowerBound * outputs)..<(s.upperBound * outputs)])))
                }
                try reducer.finishMicroBatch()
                offset += p.chunks.count
            }
            return (Array(model.parameters.summedGrads), model.parameters.summedGradientBase != nil)
        }.reduce(into: (sum: [Float](), inRegion: true)) { acc, r in
            if acc.sum.isEmpty { acc.sum = r.0 } else { XCTAssertEqual(acc.sum.map(\.bitPattern), r.0.map(\.bitPattern), "ranks disagree") }
            acc.inRegion = acc.inRegion && r.1
        }
    }

    func testMicroBatchesWhoseTreesNeedMoreRoomKeepTheBitsOfOneRank() throws {
        // 3 chunks, then 7 (the last of 3 samples): on 3 ranks the first micro-batch gives each
        // rank one block and the second two ([0,2) [2,3); [3,4) [4,5); [5,6) [6,7)), so the
        // region grows in mid-step and each rank carries its segment of the sum so far across.
        let sizes = [12, 27], samples = 39
        let rng = Philox(seed: 5).stream(.test, 9, 0)
        let x = (0..<(samples * inputs)).map { rng.normal($0) }
        let dy = (0..<(samples * outputs)).map { rng.normal(50_000 + $0) * 0.01 }
        let one = try reduce(ranks: 1, shared: true, sizes: sizes, x: x, dy: dy)
        XCTAssertFalse(one.inRegion, "one rank has nothing to share")
        XCTAssertTrue(one.sum.contains { $0 != 0 })
        for ranks in [2, 3, 4] {
            let shared = try reduce(ranks: ranks, shared: true, sizes: sizes, x: x, dy: dy)
            let messages = try reduce(ranks: ranks, shared: false, sizes: sizes, x: x, dy: dy)
            XCTAssertTrue(shared.inRegion, "\(ranks) thread ranks reduce in shared memory")
            XCTAssertFalse(messages.inRegion)
            XCTAssertEqual(shared.sum.map(\.bitPattern), one.sum.map(\.bitPattern), "\(ranks) ranks, shared memory")
            XCTAssertEqual(messages.sum.map(\.bitPattern), one.sum.map(\.bitPattern), "\(ranks) ranks, messages")
        }
    }

    func testATrainerOnOneHostSendsNoGradientAndKeepsTheBitsOfMessages() throws {
        let data = makeData()
        // Accumulation and clipping (which scales a rank's own copy of the shared sum).
        let common = ["train.exact=true", "train.chunk=4", "train.accumulate_steps=2", "optimizer.clip_norm=0.5"]
        func train(_ shared: Bool) throws -> (bits: [UInt32], bytes: Int) {
            let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shared.yaml", overrides: common + ["train.shared_memory=\(shared)"])
            let results = try ThreadCommunicator.run(size: 2) { comm -> ([UInt32], Int) in
                let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
                try trainer.run()
                // What `lockstep bench` reports.
                XCTAssertEqual(trainer.gradientReduction.contains("shared memory"), shared, trainer.gradientReduction)
                return (stateBits(trainer), trainer.communicator.allReduceBytes)
            }
            XCTAssertEqual(results[0].0, results[1].0, "replicas differ")
            return results[0]
        }
        let shared = try train(true), messages = try train(false)
        XCTAssertEqual(shared.bits, messages.bits)
        // allReduceBytes counts the last epoch: with messages every step all-reduces at least
        // the whole gradient; in shared memory only the loss words and BN statistics travel.
        let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shared.yaml", overrides: common)
        let arena = try Trainer(config: config, communicator: SingleProcessCommunicator(), data: data, console: Console(isEnabled: false)).model.parameters.count
        XCTAssertGreaterThan(messages.bytes - shared.bytes, arena * 4, "messages: \(messages.bytes) bytes, shared: \(shared.bytes)")
    }
}
