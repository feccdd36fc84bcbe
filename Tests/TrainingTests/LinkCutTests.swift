// A cut network link on emulated hosts (launch/testbed): the job ends within the collective
// deadline plus 15 s, with a non-zero exit and one line naming the collective, where training
// stood and the host cut off; the last checkpoint stays intact and resumes to the bits of an
// uninterrupted run. Cuts land mid-step (at a random point, by time), during a checkpoint's
// gather and during evaluation (placed exactly with the LOCKSTEP_FAULT_PAUSE hook). Skipped
// where namespaces cannot be made.
import Formats
import Foundation
import Training
import TrainingTestSupport
import XCTest

final class LinkCutTests: XCTestCase {
    let cli = CLI()
    var testbed: String { repositoryRoot.appendingPathComponent("launch/testbed").path }
    var train: String { repositoryRoot.appendingPathComponent("launch/train").path }
    /// The deadline the runs use; the job must end within it + 15 s.
    let timeout = 5.0

    func requireTestbed() throws {
        try cli.requireMPI()
        let probe = try cli.run([testbed, "--hosts", "1", "--", "true"], timeout: 60)
        if probe.status == 77 { throw XCTSkip(probe.output.trimmingCharacters(in: .whitespacesAndNewlines)) }
        XCTAssertEqual(probe.status, 0, probe.output)
    }

    /// A small MLP whose 74k gradients take most of a step at 100 Mbit/s (so a cut by time lands
    /// in a transfer); 10 steps an epoch, a checkpoint every 5, a constant learning rate (so that
    /// the run's length does not change its steps), exact mode.
    func config(data: String) throws -> String {
        try cli.writeConfig(smallMLPConfig(extra: "").replacingOccurrences(of: "path: /nonexistent", with: "path: \(data)")
            .replacingOccurrences(of: "dense: {out: 32}", with: "dense: {out: 512}")
            .replacingOccurrences(of: "max_steps: 50", with: "max_steps: 100000").replacingOccurrences(of: "epochs: 5", with: "epochs: 10000"))
    }

    /// Runs `launch/train` on 2 testbed hosts; `cut` is a shell condition that, once true, has
    /// node1's link taken down. Returns the job's status, seconds from the cut to its end, and
    /// its output.
    func cutRun(config: String, dir: String, when cut: String, environment: [String: String] = [:]) throws -> (status: Int, seconds: Double, output: String) {
        let script = """
        "$1" -n 2 "$2" --set output.dir="$3" --set train.log_every=1 --set checkpoint.every_steps=5 \\
          --set train.exact=true --set train.chunk=4 --set check.collective_timeout=\(timeout) > "$3.log" 2>&1 &
        job=$!
        for i in $(seq 1 1200); do \(cut) && break; sleep 0.05; done
        ns=${LOCKSTEP_TESTBED_NAMESPACES#* }; ns=${ns%% *}
        ip -n "$ns" link set eth0 down
        t0=$(date +%s.%N)
        wait $job; status=$?
        echo "job ended with status $status after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }') s"
        cat "$3.log"
        """
        let env = environment.merging(["LOCKSTEP_BIN": cli.lockstep]) { a, _ in a }
        let r = try cli.run([testbed, "--hosts", "2", "--rate", "100mbit", "--", "bash", "-c", script, "cut", train, config, dir],
                            environment: env, timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        let pattern = try NSRegularExpression(pattern: "job ended with status (\\d+) after ([0-9.]+) s")
        guard let m = pattern.firstMatch(in: r.output, range: NSRange(r.output.startIndex..., in: r.output)),
              let status = Int(r.output[Range(m.range(at: 1), in: r.output)!]),
              let seconds = Double(r.output[Range(m.range(at: 2), in: r.output)!]) else {
            XCTFail("no timing in the output: \(r.output)")
            return (0, 0, r.output)
        }
        return (status, seconds, r.output)
    }

    /// The one line a cut produces: the collective, where training stood, the host cut off.
    func assertEndedCleanly(_ r: (status: Int, seconds: Double, output: String), at place: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(r.status, 0, "a job that lost a host must fail: \(r.output)", file: file, line: line)
        XCTAssertLessThan(r.seconds, timeout + 15, r.output, file: file, line: line)
        let lines = r.output.split(separator: "\n").filter { $0.contains(" timed out after ") }
        XCTAssertFalse(lines.isEmpty, "no timeout message: \(r.output)", file: file, line: line)
        XCTAssertTrue(lines.contains { $0.contains("MPI_") && $0.contains(" at \(place)") && $0.contains("node1") }, r.output, file: file, line: line)
    }

    func testACutLinkEndsTheJobAndTheLastCheckpointResumesBitForBit() throws {
        try requireTestbed()
        let data = try writeIDXDirectory()
        let config = try config(data: data)
        let runs = makeTempDir("lockstep-cut")
        // Mid-step, by time: once step 12 is logged (after the checkpoint at 10).
        let mid = try cutRun(config: config, dir: "\(runs)/mid", when: "grep -q '\"step\":12,' \"$3/metrics.jsonl\" 2>/dev/null")
        assertEndedCleanly(mid, at: "step ")
        // The newest checkpoint is whole and continues to the bits of an uninterrupted run.
        let newest = try XCTUnwrap(Checkpointer.newest(in: "\(runs)/mid"), mid.output)
        XCTAssertNoThrow(try SafeTensorsFile.read(path: newest))
        let steps = ["--set", "train.max_steps=50", "--set", "train.exact=true", "--set", "train.chunk=4",
                     "--set", "checkpoint.every_steps=5", "--set", "train.log_every=1"]
        let single = try cli.run([cli.lockstep, "train", "--config", config] + steps + ["--set", "output.dir=\(runs)/one"])
        XCTAssertEqual(single.status, 0, single.output)
        let resumed = try cli.run([testbed, "--hosts", "2", "--", train, "-n", "2", config] + steps
                                  + ["--set", "output.dir=\(runs)/mid", "--resume", "auto"],
                                  environment: ["LOCKSTEP_BIN": cli.lockstep], timeout: 120)
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.output.contains("resumed from \(newest)"), resumed.output)
        XCTAssertEqual(try checkpointBits("\(runs)/mid"), try checkpointBits("\(runs)/one"), "the resumed run must end with the uninterrupted bits")
    }

    func testACutDuringACheckpointGatherOrEvaluationEndsTheJob() throws {
        try requireTestbed()
        let data = try writeIDXDirectory()
        let config = try config(data: data)
        let runs = makeTempDir("lockstep-cut-places")
        // Rank 1 (node1) pauses on entering the place; the link goes down during the pause, so
        // rank 0 waits in that place's first collective and rank 1 enters it cut off.
        for place in ["checkpoint at step 15", "evaluation after step 10"] {
            let flag = "\(runs)/paused-\(place.split(separator: " ")[0])"
            let r = try cutRun(config: config, dir: "\(runs)/\(place.split(separator: " ")[0])", when: "[ -e '\(flag)' ]",
                               environment: ["LOCKSTEP_FAULT_RANK": "1", "LOCKSTEP_FAULT_PAUSE": place, "LOCKSTEP_FAULT_PAUSE_FILE": flag])
            assertEndedCleanly(r, at: place)
            XCTAssertTrue(FileManager.default.fileExists(atPath: flag), "the pause was reached: \(r.output)")
            if let newest = Checkpointer.newest(in: "\(runs)/\(place.split(separator: " ")[0])") {
                XCTAssertNoThrow(try SafeTensorsFile.read(path: newest), "\(place): the last checkpoint is intact")
            }
        }
    }
}
