// `lockstep bench --against`: the interleaved benchmark runs each trainer exactly its warm-up and
// timed steps, in order, and reports one pair of rates per pair of blocks.
@testable import Benchmarks
import Collectives
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
}
