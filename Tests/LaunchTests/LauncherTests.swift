// The launcher: which communicator a process gets, and the exit status each ending maps to
// (success, an error on any rank, a preempted run that checkpointed).
import Collectives
import Configuration
import Launch
@testable import Training
import XCTest

final class LauncherTests: XCTestCase {
    func testExitStatusesOfEachEnding() {
        XCTAssertEqual(Launcher.backend(simulateRanks: nil), .single)
        XCTAssertEqual(Launcher.backend(simulateRanks: 3), .threads(3))
        XCTAssertEqual(Launcher.run(simulateRanks: 3) { comm in try comm.barrier() }, 0)
        XCTAssertEqual(Launcher.run(simulateRanks: 3) { comm in
            if comm.rank == 2 { throw ConfigError("simulated failure") }
            try comm.barrier()
        }, 1, "an error on one rank ends every rank with status 1")
        XCTAssertEqual(Launcher.run(simulateRanks: 2) { _ in throw Preempted(step: 5) }, Preempted.exitCode)
        XCTAssertEqual(Launcher.run(simulateRanks: nil) { _ in throw Preempted(step: 5) }, 75)
        XCTAssertEqual(Launcher.run(simulateRanks: nil) { _ in throw ConfigError("bad key") }, 1)
    }
}
