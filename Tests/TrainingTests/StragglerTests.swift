// Stragglers: each rank's compute time per step rides in the epoch's existing sum, and a rank
// slower than the median by more than check.straggler_threshold is named in the metrics (and the
// epoch line); the bits do not change.
import Collectives
import Configuration
import Formats
import TensorCore
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class StragglerTests: XCTestCase {
    func testTheRuleAgainstTheMedian() {
        XCTAssertEqual(Trainer.stragglers([1, 1, 1, 2], threshold: 0.25), [3])
        XCTAssertEqual(Trainer.stragglers([1, 1.2], threshold: 0.25), [], "1.2 is 1.09× the median 1.1")
        XCTAssertEqual(Trainer.stragglers([1, 2], threshold: 0.25), [1], "2 is 1.33× the median 1.5")
        XCTAssertEqual(Trainer.stragglers([1, 5], threshold: 0), [], "0 turns the report off")
        XCTAssertEqual(Trainer.stragglers([3], threshold: 0.25), [], "one rank has no peers")
        XCTAssertEqual(median([4, 1, 3]), 3)
        XCTAssertEqual(median([4, 1, 3, 2]), 2.5)
    }

    /// Rank 1 of 2 spends 8 ms more per step (LOCKSTEP_FAULT_SLOW spins, like compute): it is
    /// named in every epoch's metrics, with its compute time per step at least 8 ms above rank 0's
    /// (the tiny MLP's step is well under 8 ms, so the margin is the injected time itself); and
    /// the trained bits are those of a run without the slow rank.
    func testASlowedRankIsNamedAndTheBitsDoNotChange() throws {
        let cfg = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "mlp.yaml", overrides: ["train.epochs=2", "train.max_steps=0"])
        let data = makeData()
        func train(slow: Bool) throws -> (history: [EpochMetrics], bits: [UInt32]) {
            if slow { setenv("LOCKSTEP_FAULT_RANK", "1", 1); setenv("LOCKSTEP_FAULT_SLOW", "8", 1) }
            defer { unsetenv("LOCKSTEP_FAULT_RANK"); unsetenv("LOCKSTEP_FAULT_SLOW") }
            return try ThreadCommunicator.run(size: 2) { comm in
                let trainer = try Trainer(config: cfg, communicator: comm, data: data, console: Console(isEnabled: false))
                let history = try trainer.run()
                return (history, stateBits(trainer))
            }[0]
        }
        let slow = try train(slow: true)
        XCTAssertEqual(slow.history.count, 2)
        for m in slow.history {
            XCTAssertEqual(m.stragglers, [1], "epoch \(m.epoch)")
            let compute = try XCTUnwrap(m.rankComputeSecondsPerStep)
            XCTAssertEqual(compute.count, 2)
            XCTAssertGreaterThan(compute[1] - compute[0], 0.008 * 0.9, "the injected 8 ms per step, less timer slack: \(compute)")
        }
        XCTAssertEqual(try train(slow: false).bits, slow.bits, "a straggler costs time, not bits")
    }
}
