// Overlapped gradient all-reduce (train.bucket_mb): the buckets a backward sends, their sums, and
// training with buckets against training without, on thread ranks and under mpirun.
import Collectives
import Configuration
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class OverlapTests: XCTestCase {
    func testBucketsSumEveryGradientAndTheStopFlag() throws {
        // 100 gradients and a spare float; layers start at 90, 60, 45, 30 and 0; buckets of 25
        // floats. Sent: [60, 101) after the layer at 60 (41 floats ≥ 25); [30, 60) after the one
        // at 30; [0, 30) by finish: 3 buckets. The layer at 90 (11 floats) and at 45 (15) wait.
        let results = try ThreadCommunicator.run(size: 3) { comm -> [Float] in
            var grads = (0..<101).map { Float($0 * (comm.rank + 1)) }
            grads[100] = comm.rank == 2 ? 1 : 0   // rank 2 asks to stop
            return try grads.withUnsafeMutableBufferPointer { g -> [Float] in
                let buckets = GradientBuckets(grads: g, bucketBytes: 25 * 4, communicator: comm)
                for start in [90, 60, 45, 30, 0] { try buckets.layerFinished(start: start) }
                try buckets.finish()
                XCTAssertEqual(buckets.bucketsSent, 3)
                return Array(g)
            }
        }
        for r in results {   // Σ over ranks of i·(rank+1) = 6i, exact in float for i < 100
            XCTAssertEqual(Array(r[0..<100]), (0..<100).map { Float(6 * $0) })
            XCTAssertEqual(r[100], 1, "the stop flag reaches every rank")
        }
    }

    func testBucketedTrainingHasTheBitsOfOneAllReduceOnThreadRanks() throws {
        // Thread ranks add in rank order whatever the message size, so bucketing cannot change
        // a bit. Buckets of 104 bytes (26 floats): every layer's gradients go out on their own.
        let data = makeData()
        let yaml = smallMLPConfig().replacingOccurrences(of: "  - dense: {out: 4}", with: "  - dense: {out: 32}\n  - batchnorm: {}\n  - relu\n  - dense: {out: 4}")
        func train(_ bucket: String) throws -> (bits: [UInt32], allReduces: Int) {
            // The float path's buckets (exact mode's are tested below).
            let config = try TrainingConfig.parse(yaml: yaml, file: "overlap.yaml", overrides: ["train.bucket_mb=\(bucket)", "train.exact=false"])
            let results = try ThreadCommunicator.run(size: 3) { comm -> ([UInt32], Int) in
                let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
                try trainer.run()
                return (stateBits(trainer), trainer.communicator.allReduces)
            }
            XCTAssertTrue(results.allSatisfy { $0.0 == results[0].0 }, "replicas differ")
            return results[0]
        }
        let whole = try train("0"), bucketed = try train("0.0001")
        XCTAssertEqual(bucketed.bits, whole.bits)
        // Five layers with parameters: five all-reduces a step where there was one. The counts
        // are the last epoch's (they restart each epoch): 240 samples in batches of 24, 10 steps.
        XCTAssertEqual(bucketed.allReduces, whole.allReduces + 4 * 10)
    }

    func testExactBucketsKeepTheBitsOfOneRank() throws {
        // Exact mode in buckets: the chunk tree is per element either way, so 3 or 8 thread
        // ranks (at 8 some hold no chunk) with a bucket per layer and 2 micro-batches give the
        // bits of one rank without buckets.
        let data = makeData()
        let yaml = smallMLPConfig().replacingOccurrences(of: "  - dense: {out: 4}", with: "  - dense: {out: 32}\n  - batchnorm: {}\n  - relu\n  - dense: {out: 4}")
        func train(ranks: Int, bucket: String) throws -> (bits: [UInt32], allReduces: Int) {
            let config = try TrainingConfig.parse(yaml: yaml, file: "overlap.yaml",
                                                  overrides: ["train.exact=true", "train.chunk=4", "train.accumulate_steps=2", "train.bucket_mb=\(bucket)",
                                                              "train.shared_memory=false"])   // buckets are messages
            let results = try ThreadCommunicator.run(size: ranks) { comm -> ([UInt32], Int) in
                let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
                try trainer.run()
                return (stateBits(trainer), trainer.communicator.allReduces)
            }
            XCTAssertTrue(results.allSatisfy { $0.0 == results[0].0 }, "replicas differ")
            return results[0]
        }
        let one = try train(ranks: 1, bucket: "0")
        let whole = try train(ranks: 3, bucket: "0"), bucketed = try train(ranks: 3, bucket: "0.0001")
        XCTAssertEqual(whole.bits, one.bits)
        XCTAssertEqual(bucketed.bits, one.bits)
        XCTAssertEqual(try train(ranks: 8, bucket: "0.0001").bits, one.bits)
        // A bucket per layer with parameters (5) in the step's last micro-batch, each an
        // all-to-all and an all-gather, where the whole arena takes one of each: 8 more
        // collectives a step, over the last epoch's 10 steps.
        XCTAssertEqual(bucketed.allReduces, whole.allReduces + 8 * 10)
    }

    func testANonFiniteGradientInABucketStopsEveryRankAlike() throws {
        // The divergence recipe of DivergenceTests in exact mode with a bucket per layer: a
        // poisoned bucket is known to every rank (its max all-reduce), so all skip its sum and
        // stop with the same error instead of hanging on mismatched collectives. The same in
        // shared memory, where no bucket is sent and each rank's update reads its own NaNs.
        let yaml = smallCNNConfig().replacingOccurrences(of: "\n  - batchnorm: {}", with: "")
        for shared in [false, true] {
            let config = try TrainingConfig.parse(yaml: yaml, file: "small.yaml", overrides: [
                "optimizer.lr=1000", "train.max_steps=0", "train.epochs=5", "schedule.warmup_epochs=0",
                "train.exact=true", "train.chunk=4", "train.bucket_mb=0.0001", "train.shared_memory=\(shared)"])
            XCTAssertThrowsError(try ThreadCommunicator.run(size: 3) { comm -> Int in
                try Trainer(config: config, communicator: comm, data: makeData(), console: Console(isEnabled: false)).run()
                return 0
            }) { error in
                XCTAssertTrue("\(error)".contains("training diverged"), "shared memory \(shared): \(error)")
            }
        }
    }

    func testANegativeBucketSizeIsAnErrorNamingTheKey() {
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: smallMLPConfig(), file: "overlap.yaml", overrides: ["train.bucket_mb=-1"])) { error in
            XCTAssertTrue("\(error)".contains("train.bucket_mb"), "\(error)")
        }
    }

    func testBucketedTrainingUnderMPIMatchesOneAllReduce() throws {
        let cli = CLI()
        try cli.requireMPI()
        let dir = try writeIDXDirectory()
        let config = try cli.writeConfig(smallMLPConfig().replacingOccurrences(of: "path: /nonexistent", with: "path: \(dir)"))
        let runs = makeTempDir("lockstep-overlap")
        var bits: [String: [String: [UInt32]]] = [:]
        for bucket in ["0", "0.001"] {
            let r = try cli.mpirun(2, ["train", "--config", config, "--set", "train.bucket_mb=\(bucket)", "--set", "output.dir=\(runs)/b\(bucket)"], tcp: true)
            XCTAssertEqual(r.status, 0, r.output)
            guard r.status == 0 else { return }
            bits[bucket] = try checkpointBits("\(runs)/b\(bucket)")
        }
        // Two ranks: each gradient element is one IEEE addition a + b, which is commutative, so
        // MPI_Iallreduce on buckets and one MPI_Allreduce must give the same bits.
        XCTAssertEqual(bits["0.001"], bits["0"])
        // Exact mode with buckets (MPI_Iallreduce of maxima and Int64 sums) on 2 and 3 ranks: the
        // bits of one process.
        let exact = ["--set", "train.exact=true", "--set", "train.chunk=4", "--set", "train.bucket_mb=0.001", "--set", "train.shared_memory=false"]
        let one = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(runs)/exact1"] + exact)
        XCTAssertEqual(one.status, 0, one.output)
        let reference = try checkpointBits("\(runs)/exact1")
        for ranks in [2, 3] {
            let r = try cli.mpirun(ranks, ["train", "--config", config, "--set", "output.dir=\(runs)/exact\(ranks)"] + exact, tcp: true)
            XCTAssertEqual(r.status, 0, r.output)
            guard r.status == 0 else { continue }
            let got = try checkpointBits("\(runs)/exact\(ranks)")
            for (key, bits) in reference where got[key] != bits { XCTFail("\(ranks) ranks: \(key) differs from the one-process run") }
        }
    }
}
