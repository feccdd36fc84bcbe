// `lockstep bench --against`: the interleaved benchmark runs each trainer exactly its warm-up and
// timed steps, in order, and reports one pair of rates per pair of blocks.
@testable import Benchmarks
import Collectives
import Foundation
import Configuration
@testable import Training
import TrainingTestSupport
import XCTest

final class InterleavedTests: XCTestCase {
    func testEachTrainerRunsItsStepsInOrderAndEveryPairIsTimed() throws {
        let data = makeData()
        func trainer(_ overrides: [String]) throws -> Trainer {
            let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "small.yaml", overrides: overrides)
            return try Trainer(config: config, communicator: SingleProcessCommunicator(), data: data)
        }
        let a = try trainer(["train.exact=true"]), b = try trainer(["train.exact=false"])
        let r = try interleavedBenchmark(a, b, steps: 2, warmup: 1, pairs: 3)
        XCTAssertEqual(r.pairs.count, 3)
        for p in r.pairs { XCTAssertTrue(p.a.isFinite && p.a > 0 && p.b.isFinite && p.b > 0, "\(p)") }
        XCTAssertEqual(r.ratios.count, 3)
        // Each trainer took 1 + 3 × 2 = 7 steps through epoch 0's order: the same parameters, bit
        // for bit, as a trainer of its own that takes 7 steps (exact mode and float sums alike are
        // deterministic on one rank).
        for (timed, overrides) in [(a, ["train.exact=true"]), (b, ["train.exact=false"])] {
            let alone = StepRunner(try trainer(overrides))
            try alone.run(7)
            XCTAssertEqual(Array(timed.model.parameters.flatValues).map(\.bitPattern),
                           Array(alone.trainer.model.parameters.flatValues).map(\.bitPattern), "\(overrides)")
            try alone.run(1)
            XCTAssertNotEqual(Array(timed.model.parameters.flatValues).map(\.bitPattern),
                              Array(alone.trainer.model.parameters.flatValues).map(\.bitPattern), "an eighth step changes the parameters")
        }
    }

    /// A trainer given a run directory takes the epoch loop's periodic checkpoints in its
    /// blocks (and its steps keep their bits); one that would run past the run's last step,
    /// where no periodic checkpoints are taken, is refused with a message saying so.
    func testCheckpointingTrainerWritesItsCheckpointsAndPastTheEndIsRefused() throws {
        let data = makeData()
        func trainer(_ overrides: [String]) throws -> Trainer {
            let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "small.yaml", overrides: overrides)
            return try Trainer(config: config, communicator: SingleProcessCommunicator(), data: data)
        }
        let every = ["checkpoint.every_steps=2", "checkpoint.keep=10"]
        let a = try trainer(every), b = try trainer(["checkpoint.every_steps=0"])
        let dir = makeTempDir("lockstep-interleaved")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = try RunDirectory(path: dir, isEnabled: true, resolvedConfig: a.config.resolvedYAML)
        _ = try interleavedBenchmark(a, b, steps: 4, warmup: 1, pairs: 2, directories: (run, nil))
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("ckpt-step") }.sorted()
        XCTAssertEqual(files, [2, 4, 6, 8].map { Checkpointer.fileName(step: $0) }, "steps 1 + 2 × 4 = 9, a checkpoint every 2")
        XCTAssertEqual(Array(a.model.parameters.flatValues).map(\.bitPattern), Array(b.model.parameters.flatValues).map(\.bitPattern),
                       "checkpoints change no bits")
        XCTAssertThrowsError(try interleavedBenchmark(try trainer(every), try trainer([]), steps: 20, warmup: 10, pairs: 2,
                                                      directories: (run, nil))) { error in
            XCTAssertTrue("\(error)".contains("reach the run's last step (50)"), "\(error)")
        }
    }

    /// `traceSteps` (`lockstep bench --step-trace`): one row per timed step, each trainer's steps
    /// numbered in order across its blocks, A's and B's blocks alternating as the pairs run, and
    /// each row's figures consistent (the step's time covers its collectives; it started after
    /// the step before it ended).
    func testStepTraceHasOneConsistentRowPerTimedStep() throws {
        let data = makeData()
        func trainer() throws -> Trainer {
            try Trainer(config: try TrainingConfig.parse(yaml: smallMLPConfig(), file: "small.yaml"), communicator: SingleProcessCommunicator(), data: data)
        }
        let r = try interleavedBenchmark(try trainer(), try trainer(), steps: 3, warmup: 2, pairs: 2, traceSteps: true)
        XCTAssertEqual(r.trace.map(\.trainer), ["A", "A", "A", "B", "B", "B", "B", "B", "B", "A", "A", "A"], "blocks A B, then B A")
        XCTAssertEqual(r.trace.map(\.block), [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4])
        XCTAssertEqual(r.trace.filter { $0.trainer == "A" }.map(\.step), [3, 4, 5, 6, 7, 8], "after 2 warm-up steps")
        XCTAssertEqual(r.trace.filter { $0.trainer == "B" }.map(\.step), [3, 4, 5, 6, 7, 8])
        for (earlier, row) in zip(r.trace, r.trace.dropFirst()) {
            XCTAssertGreaterThanOrEqual(row.start, earlier.start + earlier.wall, "steps do not overlap")
        }
        for row in r.trace {
            XCTAssertGreaterThan(row.wall, 0)
            XCTAssertGreaterThanOrEqual(row.wall, row.collectives)
            XCTAssertGreaterThanOrEqual(row.threadCPU, 0)
            XCTAssertGreaterThanOrEqual(row.processCPU, 0)
            XCTAssertEqual(row.line.split(separator: "\t").count, StepTrace.header.split(separator: "\t").count)
        }
        XCTAssertTrue(try interleavedBenchmark(try trainer(), try trainer(), steps: 1, warmup: 0, pairs: 1).trace.isEmpty, "untraced by default")
    }
}
