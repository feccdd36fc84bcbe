// launch/train as users run it: `--threads T` really gives each rank T OpenBLAS threads (ranks
// are not bound to one core then), and `--command ranks` needs no config.
import Foundation
import TrainingTestSupport
import XCTest

final class LaunchScriptTests: XCTestCase {
    let cli = CLI()
    var script: String { repositoryRoot.appendingPathComponent("launch/train").path }

    func testThreadsReachOpenBLASAndRanksNeedsNoConfig() throws {
        try cli.requireMPI()
        // OpenBLAS never runs more threads than the machine has cores.
        guard ProcessInfo.processInfo.activeProcessorCount >= 2 else { throw XCTSkip("one core: OpenBLAS caps its threads at 1") }
        let data = try writeIDXDirectory()
        let config = try cli.writeConfig(smallCNNConfig(dataPath: data))
        let env = ["LOCKSTEP_BIN": cli.lockstep]
        // The fast path (exact mode pins one BLAS thread per rank).
        let bench = try cli.run([script, "-n", "1", "--threads", "2", "--command", "bench", config, "--set", "train.exact=false",
                                 "--steps", "3", "--warmup", "1", "--runs", "1"], environment: env)
        XCTAssertEqual(bench.status, 0, bench.output)
        XCTAssertTrue(bench.output.contains("× 2 BLAS thread(s)"), bench.output)
        let ranks = try cli.run([script, "-n", "2", "--command", "ranks"], environment: env)
        XCTAssertEqual(ranks.status, 0, ranks.output)
        XCTAssertTrue(ranks.output.contains("rank 0 of 2") && ranks.output.contains("rank 1 of 2"), ranks.output)
    }
}
