// The elastic supervisor (launch/elastic) on emulated hosts (launch/testbed): a host lost and
// back (launch/elastic-check: continue on 2 ranks, grow to 3, the one-process bits, bad input
// refused in one line), and --exclude-stragglers leaving a slowed host out at the next restart.
// Skipped where namespaces cannot be made.
import Formats
import Foundation
import TrainingTestSupport
import XCTest

final class ElasticTests: XCTestCase {
    let cli = CLI()
    func script(_ name: String) -> String { repositoryRoot.appendingPathComponent(name).path }

    func testAHostLostAndBackEndsWithTheOneProcessBits() throws {
        try cli.requireMPI()
        let r = try cli.run([script("launch/elastic-check"), "--probe-timeout", "3"], environment: ["LOCKSTEP_BIN": cli.lockstep], timeout: 400)
        if r.status == 77 { throw XCTSkip("no testbed here: \(r.output.suffix(200))") }
        XCTAssertEqual(r.status, 0, String(r.output.suffix(3000)))
    }

    /// Rank 2 (node2) spends 30 ms more per step and fails at step 25: the epoch records at
    /// steps 10 and 20 name it, so the restart leaves node2 out; the 2-rank run finishes with the
    /// one-process bits.
    func testExcludeStragglersLeavesTheSlowHostOutAtTheRestart() throws {
        try cli.requireMPI()
        let data = try writeIDXDirectory()
        let config = try cli.writeConfig(smallMLPConfig(extra: "checkpoint: {every_steps: 5}\ncheck: {collective_timeout: 15}")
            .replacingOccurrences(of: "path: /nonexistent", with: "path: \(data)"))
        let runs = makeTempDir("lockstep-elastic-straggler")
        let single = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(runs)/one"])
        XCTAssertEqual(single.status, 0, single.output)
        let r = try cli.run([script("launch/testbed"), "--hosts", "3", "--", script("launch/elastic"), "--exclude-stragglers",
                             "--probe-timeout", "3", "--probe-every", "2", "--max-restarts", "2", config, "--set", "output.dir=\(runs)/elastic"],
                            environment: ["LOCKSTEP_BIN": cli.lockstep, "LOCKSTEP_FAULT_RANK": "2", "LOCKSTEP_FAULT_SLOW": "30",
                                          "LOCKSTEP_FAULT_STEP": "25"], timeout: 300)
        if r.status == 77 { throw XCTSkip("no testbed here") }
        XCTAssertEqual(r.status, 0, String(r.output.suffix(3000)))
        XCTAssertTrue(r.output.contains("straggler: rank 2 on node2"), "the epoch line names it: \(r.output.suffix(3000))")
        XCTAssertTrue(r.output.contains("leaving out node2"), String(r.output.suffix(3000)))
        XCTAssertTrue(r.output.contains("3 → 2 ranks"), String(r.output.suffix(3000)))
        let reference = try SafeTensorsFile.read(path: "\(runs)/one/ckpt-step00000050.safetensors")
        let final = try SafeTensorsFile.read(path: "\(runs)/elastic/ckpt-step00000050.safetensors")
        for e in reference.entries {
            XCTAssertEqual(final.entry(e.name).map { final.values($0).map(\.bitPattern) }, reference.values(e).map(\.bitPattern), e.name)
        }
    }
}
