// The sharded optimizer step (optimizer.shard, ZeRO-1): the shard layout, the exact global norm,
// bit-identical training sharded and unsharded on 1, 2 and 4 ranks, resume across world sizes,
// the stop flag on the fast path, and the real MPI reduce-scatter and all-gather.
import Collectives
import Configuration
import Foundation
import NN
import Optimizers
import TensorCore
@testable import Training
import TrainingTestSupport
import XCTest

/// stateBits with the optimizer state of the whole arena (gathered from every rank when sharded).
func fullStateBits(_ trainer: Trainer) throws -> [UInt32] {
    try trainer.withFullOptimizerState { state in
        (Array(trainer.model.parameters.flatValues) + Array(trainer.model.buffers.flatValues)
            + state.flatMap { Array($0.values) }).map(\.bitPattern)
    }
}

final class ShardingTests: XCTestCase {
    func testLayoutCutsWholeTilesCoveringTheArena() {
        // 19 tiles of 256 and a partial one (5000 elements) over 3 ranks: 20·r/3 tiles → 0, 6, 13, 20.
        let layout = ShardLayout(count: 5000, ranks: 3)
        XCTAssertEqual(layout.ranges, [0..<1536, 1536..<3328, 3328..<5000])
        XCTAssertEqual(layout.counts.reduce(0, +), 5000)
        // Fewer tiles than ranks: some ranks own nothing, and the blocks still cover the arena.
        XCTAssertEqual(ShardLayout(count: 300, ranks: 4).ranges, [0..<0, 0..<256, 256..<256, 256..<300])
    }

    func testNormWordsOfShardsAddToTheWholeNorm() {
        let arena = Arena([Parameter(name: "w", shape: [5000], initializer: .zeros, fanIn: 1, fanOut: 1)], withGradients: true)
        var x: UInt64 = 7
        for i in 0..<arena.count {   // a spread of magnitudes, so Double rounding would show
            x = x &* 6364136223846793005 &+ 1442695040888963407
            arena.grads![i] = Float(Int64(bitPattern: x >> 11) % 1000) * Float(1 << (i % 20)) * 1e-6
        }
        let whole = squaredGradientNormWords(arena)
        var sum = [Int64](repeating: 0, count: whole.count)
        for r in ShardLayout(count: arena.count, ranks: 3).ranges {
            for (i, w) in squaredGradientNormWords(arena, within: r).enumerated() { sum[i] += w }
        }
        XCTAssertEqual(sum, whole)
        // And the value is the norm: against a Double sum (relative 1e-12: 5000 terms in Double).
        let direct = (0..<arena.count).reduce(0.0) { $0 + Double(arena.grads![$1]) * Double(arena.grads![$1]) }
        let value = whole.withUnsafeBufferPointer { ExactSum.value($0.baseAddress!) }
        XCTAssertEqual(value, direct, accuracy: direct * 1e-12)
    }

    /// Rank 0's parameters, buffers and optimizer state after 50 steps, and a check that every
    /// rank holds the same parameters.
    func train(_ yaml: String, ranks: Int, overrides: [String], data: TrainingData) throws -> [UInt32] {
        let config = try TrainingConfig.parse(yaml: yaml, file: "shard.yaml", overrides: overrides)
        let results = try ThreadCommunicator.run(size: ranks) { comm -> [UInt32] in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            try trainer.run()
            return try fullStateBits(trainer)
        }
        for r in results.dropFirst() {
            XCTAssertEqual(Array(r.prefix(results[0].count)), results[0], "replicas differ at \(ranks) ranks")
        }
        return results[0]
    }

    func testShardedExactTrainingHasTheUnshardedBitsOnAnyWorldSize() throws {
        let data = makeData()
        let exact = ["train.exact=true", "train.chunk=4"]
        // Adam with clipping (the global norm, summed over shards) and SGD with momentum and decay.
        for (name, yaml, extra) in [("adam", smallMLPConfig(), ["optimizer.clip_norm=0.5"]),
                                    ("sgd", smallCNNConfig(), ["train.max_steps=50"])] {
            let reference = try train(yaml, ranks: 1, overrides: exact + extra, data: data)
            for ranks in [1, 2, 4] {
                let sharded = try train(yaml, ranks: ranks, overrides: exact + extra + ["optimizer.shard=true"], data: data)
                XCTAssertTrue(sharded == reference, "\(name): sharded on \(ranks) ranks differs from one unsharded rank")
            }
        }
    }

    func testClippingReallyClipsSoTheNormMatters() throws {
        // Guards the test above: with this clip_norm the run differs from one without it.
        let data = makeData()
        let exact = ["train.exact=true", "train.chunk=4", "optimizer.shard=true"]
        let clipped = try train(smallMLPConfig(), ranks: 2, overrides: exact + ["optimizer.clip_norm=0.5"], data: data)
        let plain = try train(smallMLPConfig(), ranks: 2, overrides: exact, data: data)
        XCTAssertNotEqual(clipped, plain)
    }

    func testEachRankHoldsOnlyItsBlockOfTheState() throws {
        let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shard.yaml", overrides: ["optimizer.shard=true"])
        let data = makeData()
        let sizes = try ThreadCommunicator.run(size: 4) { comm -> [Int] in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            XCTAssertEqual(trainer.optimizer.owned, ShardLayout(count: trainer.model.parameters.count, ranks: 4).ranges[comm.rank])
            return trainer.optimizer.state.map(\.values.count) + [trainer.model.parameters.count]
        }
        // Adam's two moments, each of the rank's block only; the blocks add up to the arena.
        XCTAssertEqual(sizes.map { $0.count }, [3, 3, 3, 3])
        XCTAssertEqual(sizes.map { $0[0] }.reduce(0, +), sizes[0][2])
        XCTAssertTrue(sizes.allSatisfy { $0[0] == $0[1] && $0[0] < $0[2] }, "\(sizes)")
    }

    func testShardedResumeOnAnotherWorldSizeIsExact() throws {
        let data = makeData()
        let overrides = ["train.exact=true", "train.chunk=4", "optimizer.shard=true", "checkpoint.every_steps=7"]
        let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shard.yaml", overrides: overrides)
        let full = try train(smallMLPConfig(), ranks: 1, overrides: overrides, data: data)
        let dir = makeTempDir("lockstep-shard")
        _ = try ThreadCommunicator.run(size: 2) { comm in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            trainer.stopAtStep = 21
            let run = try RunDirectory(path: dir, isEnabled: comm.rank == 0, resolvedConfig: config.resolvedYAML, start: .fresh)
            do { try trainer.run(directory: run) } catch is Preempted {}
        }
        let ckpt = try XCTUnwrap(Checkpointer.newest(in: dir))
        for ranks in [1, 3, 4] {
            let resumed = try ThreadCommunicator.run(size: ranks) { comm -> [UInt32] in
                let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
                try trainer.restore(from: ckpt)
                try trainer.run()
                return try fullStateBits(trainer)
            }[0]
            XCTAssertTrue(resumed == full, "resumed from step 21 of 2 sharded ranks on \(ranks) ranks")
        }
    }

    func testShardedFastPathKeepsReplicasTogetherAndStops() throws {
        let data = makeData()
        let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shard.yaml", overrides: ["optimizer.shard=true"])
        let unsharded = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shard.yaml", overrides: [])
        func run(_ c: TrainingConfig) throws -> [[Float]] {
            try ThreadCommunicator.run(size: 3) { comm -> [Float] in
                let trainer = try Trainer(config: c, communicator: comm, data: data, console: Console(isEnabled: false))
                trainer.stopAtStep = 17   // the stop flag rides in the reduce-scatter and all-gather
                do { try trainer.run(); XCTFail("no stop") } catch is Preempted {}
                XCTAssertEqual(trainer.step, 17)
                return Array(trainer.model.parameters.flatValues)
            }
        }
        let sharded = try run(config), plain = try run(unsharded)
        for r in sharded.dropFirst() { XCTAssertEqual(r.map(\.bitPattern), sharded[0].map(\.bitPattern)) }
        // Thread ranks reduce in the same order either way, so the fast path agrees bit for bit
        // here too (under MPI the reduce-scatter may add in another order).
        XCTAssertEqual(sharded[0].map(\.bitPattern), plain[0].map(\.bitPattern))
    }

    func testAutoShardsOnlyAcrossHostsAndABadValueNamesTheKey() throws {
        let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shard.yaml", overrides: [])
        XCTAssertEqual(config.optimizer.shard, .auto)
        // Thread ranks share this host: auto does not shard; true does.
        let decisions = try ThreadCommunicator.run(size: 2) { comm in
            [Trainer.shouldShard(config, comm, hosts: try hostNames(comm)),
             Trainer.shouldShard(try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shard.yaml", overrides: ["optimizer.shard=true"]), comm, hosts: try hostNames(comm))]
        }
        XCTAssertEqual(decisions[0], [false, true])
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shard.yaml", overrides: ["optimizer.shard=maybe"])) { error in
            XCTAssertTrue("\(error)".contains("optimizer.shard") && "\(error)".contains("auto"), "\(error)")
        }
    }

    func testShardAndBucketsTogetherAreAnError() {
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: smallMLPConfig(), file: "shard.yaml",
                                                      overrides: ["optimizer.shard=true", "train.bucket_mb=1"])) { error in
            XCTAssertTrue("\(error)".contains("optimizer.shard"), "\(error)")
        }
    }

    func testShardedUnderMPIHasTheOneProcessBits() throws {
        let cli = CLI()
        try cli.requireMPI()
        let dir = try writeIDXDirectory()
        let config = try cli.writeConfig(smallMLPConfig().replacingOccurrences(of: "path: /nonexistent", with: "path: \(dir)"))
        let runs = makeTempDir("lockstep-shard-mpi")
        let exact = ["--set", "train.exact=true", "--set", "train.chunk=4", "--set", "optimizer.clip_norm=0.5"]
        let one = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(runs)/one"] + exact)
        XCTAssertEqual(one.status, 0, one.output)
        let reference = try checkpointBits("\(runs)/one")
        for ranks in [2, 3] {
            let r = try cli.mpirun(ranks, ["train", "--config", config, "--set", "output.dir=\(runs)/s\(ranks)", "--set", "optimizer.shard=true"] + exact, tcp: true)
            XCTAssertEqual(r.status, 0, r.output)
            guard r.status == 0 else { continue }
            let got = try checkpointBits("\(runs)/s\(ranks)")
            XCTAssertEqual(Set(got.keys), Set(reference.keys))
            for (key, bits) in reference where got[key] != bits { XCTFail("\(ranks) sharded MPI ranks: \(key) differs from the one-process run") }
        }
    }
}
