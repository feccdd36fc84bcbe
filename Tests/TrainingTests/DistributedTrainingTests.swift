// World-size invariance and the distributed training paths, with ranks as threads.
import Collectives
import Configuration
import Datasets
import NN
@testable import Training
import TrainingTestSupport
import XCTest

final class DistributedTrainingTests: XCTestCase {
    /// Trains `steps` steps on `ranks` thread ranks; returns rank 0's parameters and buffers.
    func train(ranks: Int, bn: String, data: TrainingData, overrides: [String] = []) throws -> (params: [Float], buffers: [Float], replicasEqual: Bool) {
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml", overrides: ["bn.mode=\(bn)", "train.exact=false"] + overrides)
        let results = try ThreadCommunicator.run(size: ranks) { comm -> ([Float], [Float]) in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            try trainer.run()
            return (Array(trainer.model.parameters.flatValues), Array(trainer.model.buffers.flatValues))
        }
        let equal = results.allSatisfy { $0.0 == results[0].0 }
        return (results[0].0, results[0].1, equal)
    }

    func relativeDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        var maxDiff: Float = 0, maxAbs: Float = 0
        for i in 0..<a.count { maxDiff = max(maxDiff, abs(a[i] - b[i])); maxAbs = max(maxAbs, abs(a[i])) }
        return maxDiff / maxAbs
    }

    /// The fast path (train.exact: false): the same model up to float summation order. Exact mode's
    /// bitwise version of these tests is in ExactModeTests.
    func testSyncBatchNormTrainingIsWorldSizeInvariant() throws {
        let data = makeData()
        let one = try train(ranks: 1, bn: "sync", data: data)
        for ranks in [2, 3, 4] {
            let many = try train(ranks: ranks, bn: "sync", data: data)
            XCTAssertTrue(many.replicasEqual, "replicas differ at \(ranks) ranks")
            let d = relativeDifference(one.params, many.params)
            // Only float summation order differs (GEMMs over other batch sizes, sums in another
            // order): a few float ulps (6e-8 relative) per step, which 8 steps of SGD with
            // momentum grow to ~1e-6 at most (measured with the Haswell and SkylakeX kernels);
            // 1e-4 leaves a 100× margin while a real error (a sample lost or counted twice, a
            // wrong normaliser) moves parameters by 1e-2 or more.
            XCTAssertLessThan(d, 1e-4, "parameters at \(ranks) ranks differ from 1 rank by \(d)")
            XCTAssertLessThan(relativeDifference(one.buffers, many.buffers), 1e-4, "running statistics at \(ranks) ranks")
        }
    }

    func testLocalBatchNormDiffersFromOneRank() throws {
        let data = makeData()
        let one = try train(ranks: 1, bn: "sync", data: data)
        for ranks in [2, 4] {
            let local = try train(ranks: ranks, bn: "local", data: data)
            XCTAssertTrue(local.replicasEqual, "parameters must stay identical across ranks even with local BN")
            let d = relativeDifference(one.params, local.params)
            XCTAssertGreaterThan(d, 1e-3, "local BN at \(ranks) ranks should differ from global-batch BN, got \(d)")
        }
    }

    func testUnevenShardsAndGradientAccumulationStayInvariant() throws {
        // Global batch 24 over 5 ranks (5,5,5,5,4) and 2 micro-steps of 12 (3,3,2,2,2).
        let data = makeData()
        let base = try train(ranks: 1, bn: "sync", data: data, overrides: ["train.accumulate_steps=2"])
        let uneven = try train(ranks: 5, bn: "sync", data: data, overrides: ["train.accumulate_steps=2"])
        // Same margin as above: summation order only.
        XCTAssertLessThan(relativeDifference(base.params, uneven.params), 1e-4)
    }

    func testDistributedEvaluationCountsEverySampleOnce() throws {
        let data = makeData(testCount: 61)   // 61 does not divide by 2, 3 or 4
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml", overrides: ["data.eval_batch=7", "train.exact=false"])
        let single = try Trainer(config: config, communicator: SingleProcessCommunicator(), data: data,
                                 console: Console(isEnabled: false)).evaluate()
        XCTAssertEqual(single.count, 61)
        for ranks in [2, 3, 4] {
            let results = try ThreadCommunicator.run(size: ranks) { comm -> EvaluationResult in
                try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false)).evaluate()
            }
            for r in results {
                XCTAssertEqual(r.count, 61)
                XCTAssertEqual(r.perClassCount.reduce(0, +), 61)
                // Counts are exact; the mean loss of logits from GEMMs of other sizes differs by a
                // few float ulps per sample (~1e-7 relative on a loss near 1.4).
                XCTAssertEqual(r.accuracy, single.accuracy, accuracy: 1e-12)
                XCTAssertEqual(r.loss, single.loss, accuracy: 1e-5)
            }
        }
    }

    func testAFailingRankStopsEveryRank() throws {
        let data = makeData()
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml")
        let start = Date()
        XCTAssertThrowsError(try ThreadCommunicator.run(size: 3) { comm -> Int in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            if comm.rank == 2 { throw ConfigError("simulated failure on rank 2") }
            try trainer.run()
            return 0
        }) { error in
            XCTAssertTrue("\(error)".contains("simulated failure on rank 2"), "got \(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
    }

    func testMismatchedConfigsAreDetectedAtStart() throws {
        let data = makeData()
        XCTAssertThrowsError(try ThreadCommunicator.run(size: 2) { comm -> Int in
            let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml",
                                                  overrides: comm.rank == 1 ? ["optimizer.lr=0.2"] : [])
            _ = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            return 0
        }) { error in
            XCTAssertTrue("\(error)".contains("differs between ranks"), "got \(error)")
        }
    }

    func testTrainingReducesLoss() throws {
        let data = makeData()
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml",
                                              overrides: ["train.max_steps=0", "train.epochs=3"])
        let trainer = try Trainer(config: config, communicator: SingleProcessCommunicator(), data: data,
                                  console: Console(isEnabled: false))
        let history = try trainer.run()
        XCTAssertEqual(history.count, 3)
        XCTAssertLessThan(history.last!.trainLoss, history.first!.trainLoss)
        XCTAssertGreaterThan(history.last!.testAccuracy, 0.6, "a 4-class synthetic task should be learnable")
    }
}

final class LocalBatchNormEvaluationTests: XCTestCase {
    /// Local BN: evaluation uses the ranks' average running statistics (or rank 0's) and then
    /// restores each rank's own; the spread across ranks is reported.
    func testEvaluationUsesAveragedOrRankZeroStatistics() throws {
        let data = makeData()
        for stats in ["average", "rank0"] {
            let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml",
                                                  overrides: ["bn.mode=local", "bn.local_eval_stats=\(stats)",
                                                              "train.exact=true", "train.chunk=4"])
            let results = try ThreadCommunicator.run(size: 2) { comm -> (params: [Float], buffers: [Float], after: [Float], eval: EvaluationResult, spread: Double) in
                let t = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
                for s in 0..<8 { _ = try t.trainStep(epoch: 0, stepInEpoch: s, order: t.sampler.permutation(epoch: 0)); t.step = s + 1 }
                let before = Array(t.model.buffers.flatValues)
                let eval = try t.evaluate()
                let spread = try t.localStatisticsSpread()
                return (Array(t.model.parameters.flatValues), before, Array(t.model.buffers.flatValues), eval, spread?.mean ?? -1)
            }
            XCTAssertNotEqual(results[0].buffers, results[1].buffers, "local statistics should differ between ranks")
            for r in results { XCTAssertEqual(r.buffers, r.after, "evaluation must restore the rank's own statistics") }
            XCTAssertGreaterThan(results[0].spread, 0)
            let expected: [Float] = stats == "average"
                ? zip(results[0].buffers, results[1].buffers).map { ($0 + $1) * 0.5 }
                : results[0].buffers
            // One process with those statistics evaluates to the same numbers.
            let single = try Trainer(config: config, communicator: SingleProcessCommunicator(), data: data, console: Console(isEnabled: false))
            _ = results[0].params.withUnsafeBufferPointer { single.model.parameters.flatValues.update(fromContentsOf: $0) }
            _ = expected.withUnsafeBufferPointer { single.model.buffers.flatValues.update(fromContentsOf: $0) }
            let reference = try single.evaluate()
            // Exact mode: evaluation has the same bits however the test set is split, so the
            // comparison needs no tolerance (on the fast path GEMMs of other sizes round differently).
            XCTAssertEqual(results[0].eval.loss.bitPattern, reference.loss.bitPattern, stats)
            XCTAssertEqual(results[1].eval.accuracy, reference.accuracy, stats)
        }
    }
}

final class DivergenceTests: XCTestCase {
    func testANonFiniteLossStopsTrainingWithAClearMessage() throws {
        let data = makeData()
        // A learning rate of 1e3 without batch norm's protection blows the loss up within steps.
        let yaml = smallCNNConfig().replacingOccurrences(of: "\n  - batchnorm: {}", with: "")
        let config = try TrainingConfig.parse(yaml: yaml, file: "small.yaml",
                                              overrides: ["optimizer.lr=1000", "train.max_steps=0", "train.epochs=5", "schedule.warmup_epochs=0"])
        XCTAssertThrowsError(try ThreadCommunicator.run(size: 2) { comm -> Int in
            try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false)).run()
            return 0
        }) { error in
            XCTAssertTrue("\(error)".contains("training diverged: the loss is"), "\(error)")
        }
    }
}

final class ReplicaCheckTests: XCTestCase {
    func testDivergedReplicasStopTheJob() throws {
        let data = makeData()
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml")
        // Identical replicas pass the check.
        _ = try ThreadCommunicator.run(size: 2) { comm -> Int in
            try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false)).checkReplicas()
            return 0
        }
        // One flipped bit on rank 1 is caught on every rank.
        XCTAssertThrowsError(try ThreadCommunicator.run(size: 2) { comm -> Int in
            let t = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            if comm.rank == 1 {
                let v = t.model.parameters.values
                v[7] = Float(bitPattern: v[7].bitPattern ^ 1)
            }
            try t.checkReplicas()
            return 0
        }) { error in
            XCTAssertTrue("\(error)".contains("replicas diverged at step 0: rank 1 holds parameters that differ from rank 0's, first in conv1.weight"), "\(error)")
        }
        // With three or more ranks the majority names the odd one, and the first tensor that differs.
        XCTAssertThrowsError(try ThreadCommunicator.run(size: 4) { comm -> Int in
            let t = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            if comm.rank == 2 {
                let w = t.model.parameters.entries.first { $0.name == "dense1.weight" }!
                w.value[3] += 1
            }
            try t.checkReplicas()
            return 0
        }) { error in
            XCTAssertTrue("\(error)".contains("rank 2 holds parameters that differ from the other 3 ranks', first in dense1.weight"), "\(error)")
        }
    }
}
