// The ring model's fit (Swift) and bench/cost-model's projection (Python) against hand-computed
// values, and `lockstep bench-comm` end to end on thread ranks.
@testable import Benchmarks
import Foundation
import Training
import TrainingTestSupport
import XCTest

final class CostModelTests: XCTestCase {
    func testFitRecoversAlphaAndBetaFromTimingsOnTheRingLine() {
        // α = 5 µs, β = 1 ns/byte, p = 4: T(N) = 2·3·α + 2·3/4·N·β = 30 µs + 1.5e-9·N.
        let timings = [8, 1 << 20, 4 << 20].map { AllReduceTiming(bytes: $0, seconds: 30e-6 + 1.5e-9 * Double($0), repetitions: 5) }
        let model = RingModel.fit(timings, ranks: 4)!
        XCTAssertEqual(model.alpha, 5e-6, accuracy: 5e-6 * 1e-9)   // the fit solves normal equations: 1e-9 relative
        XCTAssertEqual(model.beta, 1e-9, accuracy: 1e-9 * 1e-9)
        XCTAssertEqual(model.allReduceSeconds(bytes: 1_048_576, ranks: 4), 30e-6 + 1.5e-9 * Double(1 << 20), accuracy: 1e-15)
        XCTAssertEqual(model.allReduceSeconds(bytes: 1_048_576, ranks: 1), 0, "one rank sends nothing")
        XCTAssertNil(RingModel.fit(Array(timings.prefix(1)), ranks: 4), "one point fixes no line")
    }

    func testFitWeighsSmallMessagesByRelativeError() {
        // Points off the line by +10% at 8 B and −10% at 64 MB: a relative fit keeps α within
        // about 10% of 5 µs; an absolute one would be dragged by the 64 MB point's microseconds.
        let line: (Int) -> Double = { 10e-6 + 1e-9 * Double($0) }   // p = 2: α = 5 µs, β = 1 ns/B
        let timings = [AllReduceTiming(bytes: 8, seconds: line(8) * 1.1, repetitions: 5),
                       AllReduceTiming(bytes: 1 << 16, seconds: line(1 << 16), repetitions: 5),
                       AllReduceTiming(bytes: 64 << 20, seconds: line(64 << 20) * 0.9, repetitions: 5)]
        let model = RingModel.fit(timings, ranks: 2)!
        XCTAssertEqual(model.alpha, 5e-6, accuracy: 0.6e-6)
        XCTAssertEqual(model.beta, 1e-9, accuracy: 0.11e-9)
    }

    func testCostModelScriptProjectsTheHandComputedStep() throws {
        // bench/cost-model's projection (in Python) against the same hand-computed step.
        let r = try CLI().run(["python3", repositoryRoot.appendingPathComponent("bench/cost-model").path, "--self-test"])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("self-test passed"), r.output)
    }

    func testBenchCommTimesEverySizeAndFitsOnThreadRanks() throws {
        let cli = CLI()
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let json = makeTempDir() + "/comm.json"
        let r = try cli.run([cli.lockstep, "bench-comm", "--simulate-ranks", "2", "--max-bytes", "8192", "--seconds-per-size", "0.01", "--json", json])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("ring model fit: alpha"), r.output)
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as! [String: Any]
        let timings = object["timings"] as! [[String: Any]]
        XCTAssertEqual(timings.map { $0["bytes"] as! Int }, [8, 32, 128, 512, 2048, 8192])
        XCTAssertTrue(timings.allSatisfy { ($0["seconds"] as! Double) > 0 })
        let one = try cli.run([cli.lockstep, "bench-comm"])
        XCTAssertNotEqual(one.status, 0)
        XCTAssertTrue(one.output.contains("needs at least 2 ranks"), one.output)
    }
}
