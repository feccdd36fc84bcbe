// End-to-end runs of the lockstep binary under mpirun.
import Foundation
import XCTest

final class MPIIntegrationTests: XCTestCase {
    let tests = CLI()
    var lockstep: String { tests.lockstep }

    func testWorldSizeInvarianceUnderMPI() throws {
        try tests.requireMPI()
        let dir = try writeIDXDirectory()
        let config = try tests.writeConfig(smallCNNConfig(dataPath: dir))
        let single = try tests.run([lockstep, "train", "--config", config, "--dump-parameters"])
        XCTAssertEqual(single.status, 0, single.output)
        let reference = tests.parameters(single.output)
        XCTAssertFalse(reference.isEmpty, single.output)
        for (ranks, tcp) in [(2, false), (4, false), (2, true)] {
            let r = try tests.mpirun(ranks, ["train", "--config", config, "--dump-parameters"], tcp: tcp)
            XCTAssertEqual(r.status, 0, r.output)
            let p = tests.parameters(r.output)
            XCTAssertEqual(p.count, reference.count, r.output)
            guard p.count == reference.count else { continue }
            let maxAbs = reference.map(abs).max()!
            let diff = zip(p, reference).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(diff / maxAbs, 1e-5, "\(ranks) ranks (tcp \(tcp)) differ from 1 rank by \(diff / maxAbs)")
        }
        // Local BN at 2 ranks differs measurably.
        let local = try tests.mpirun(2, ["train", "--config", config, "--dump-parameters", "--bn", "local"])
        XCTAssertEqual(local.status, 0, local.output)
        let lp = tests.parameters(local.output)
        XCTAssertEqual(lp.count, reference.count)
        if lp.count == reference.count {
            let diff = zip(lp, reference).map { abs($0 - $1) }.max()!
            XCTAssertGreaterThan(diff / reference.map(abs).max()!, 1e-3)
        }
    }

    func testAFailingRankEndsTheWholeJobQuickly() throws {
        try tests.requireMPI()
        let dir = try writeIDXDirectory()
        let config = try tests.writeConfig(smallCNNConfig(dataPath: dir, extra: "").replacingOccurrences(of: "max_steps: 8", with: "max_steps: 1000").replacingOccurrences(of: "epochs: 1", with: "epochs: 100"))
        let r = try tests.mpirun(2, ["train", "--config", config], env: ["LOCKSTEP_FAULT_RANK": "1", "LOCKSTEP_FAULT_STEP": "3"], timeout: 60)
        XCTAssertNotEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("rank 1: injected fault at step 3"), r.output)
        XCTAssertLessThan(r.seconds, 10, "the job took \(r.seconds) s to stop")
    }

    func testDataMissingOnOneRankIsAClearError() throws {
        try tests.requireMPI()
        let config = try tests.writeConfig(smallCNNConfig(dataPath: "/nonexistent/lockstep-data"))
        let r = try tests.mpirun(2, ["train", "--config", config], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.output.contains("/nonexistent/lockstep-data: missing train-images-idx3-ubyte"), r.output)
        XCTAssertLessThan(r.seconds, 10)
    }

    func testBadConfigKeyFailsOnEveryRankWithOneLine() throws {
        try tests.requireMPI()
        let config = try tests.writeConfig(smallCNNConfig().replacingOccurrences(of: "max_steps: 8", with: "max_step: 8"))
        let r = try tests.mpirun(2, ["train", "--config", config], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.output.contains("unknown key 'train.max_step'"), r.output)
        let single = try tests.run([lockstep, "train", "--config", config])
        XCTAssertNotEqual(single.status, 0)
        XCTAssertTrue(single.output.contains("unknown key 'train.max_step'"), single.output)
    }
}
