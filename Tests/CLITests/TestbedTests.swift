// Multi-host runs on emulated hosts (launch/testbed: network namespaces, veth, a bridge, mpirun's
// rsh agent): ranks on separate hosts over TCP train the same bits as one process, and a rank
// killed on one host ends the job quickly. Skipped, with the testbed's one-line reason, where
// namespaces cannot be made (not root, no iproute2).
import Foundation
import Training
import TrainingTestSupport
import XCTest

final class TestbedTests: XCTestCase {
    let cli = CLI()
    var testbed: String { repositoryRoot.appendingPathComponent("launch/testbed").path }
    var train: String { repositoryRoot.appendingPathComponent("launch/train").path }

    /// Skips unless a one-host testbed can be made here.
    func requireTestbed() throws {
        try cli.requireMPI()
        let probe = try cli.run([testbed, "--hosts", "1", "--", "true"], timeout: 60)
        if probe.status == 77 { throw XCTSkip(probe.output.trimmingCharacters(in: .whitespacesAndNewlines)) }
        XCTAssertEqual(probe.status, 0, probe.output)
    }

    func testMLPOnTwoAndFourHostsHasTheBitsOfOneProcess() throws {
        try requireTestbed()
        let data = try writeIDXDirectory()
        let config = try cli.writeConfig(smallMLPConfig(extra: "").replacingOccurrences(of: "path: /nonexistent", with: "path: \(data)"))
        let runs = makeTempDir("lockstep-testbed")
        let args = ["--set", "train.exact=true", "--set", "train.chunk=4"]
        let single = try cli.run([cli.lockstep, "train", "--config", config] + args + ["--set", "output.dir=\(runs)/one"])
        XCTAssertEqual(single.status, 0, single.output)
        let reference = try checkpointBits("\(runs)/one")
        XCTAssertGreaterThan(reference.count, 6, "parameters, buffers and optimizer state")
        let env = ["LOCKSTEP_BIN": cli.lockstep]
        for (hosts, rate) in [(2, "10gbit"), (4, "25gbit")] {
            let dir = "\(runs)/hosts\(hosts)"
            let r = try cli.run([testbed, "--hosts", "\(hosts)", "--rate", rate, "--", train, "-n", "\(hosts)", config]
                                + args + ["--set", "output.dir=\(dir)"], environment: env, timeout: 240)
            XCTAssertEqual(r.status, 0, r.output)
            guard r.status == 0 else { continue }
            XCTAssertTrue(r.output.contains("\(hosts) host(s)"), r.output)
            // optimizer.shard: auto shards on several hosts; the bits stay the one process's.
            XCTAssertTrue(r.output.contains("optimizer sharded over \(hosts) ranks"), r.output)
            let got = try checkpointBits(dir)
            XCTAssertEqual(Set(got.keys), Set(reference.keys))
            for (key, bits) in reference where got[key] != bits { XCTFail("\(hosts) hosts: \(key) differs from the one-process run") }
        }
        // The ranks really sit on separate hosts: each reports its own hostname.
        let ranks = try cli.run([testbed, "--hosts", "2", "--", train, "--command", "ranks", "-n", "2"], environment: env, timeout: 60)
        XCTAssertEqual(ranks.status, 0, ranks.output)
        XCTAssertTrue(ranks.output.contains("on node0") && ranks.output.contains("on node1"), ranks.output)
    }

    func testBadArgumentsGetOneLineErrors() throws {
        for (args, part) in [(["--hosts", "0", "--", "true"], "--hosts needs a positive integer, got '0'"),
                             (["--rate", "fast", "--", "true"], "--rate 'fast': expected a rate such as 10gbit"),
                             (["--hosts", "2"], "missing COMMAND after --"),
                             (["--bogus", "--", "true"], "unknown argument '--bogus'")] {
            let r = try cli.run([testbed] + args, timeout: 30)
            XCTAssertEqual(r.status, 2, "\(args): \(r.output)")
            XCTAssertTrue(r.output.contains(part), "\(args): \(r.output)")
        }
    }

    func testKillingOneHostsRankEndsTheJobWithinTenSeconds() throws {
        try requireTestbed()
        let data = try writeIDXDirectory()
        let config = try cli.writeConfig(smallMLPConfig(extra: "").replacingOccurrences(of: "path: /nonexistent", with: "path: \(data)")
            .replacingOccurrences(of: "max_steps: 50", with: "max_steps: 1000000").replacingOccurrences(of: "epochs: 5", with: "epochs: 100000"))
        let out = makeTempDir("lockstep-testbed-kill")
        // On node0: start the job, wait until it has trained (its metrics file has a step), kill
        // the rank on node1 with SIGKILL, and time how long the job takes to end.
        let script = """
        "$1" -n 2 "$2" --set output.dir="$3" --set train.log_every=1 > "$3.log" 2>&1 &
        job=$!
        for i in $(seq 1 600); do grep -q '"step"' "$3/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
        ns=${LOCKSTEP_TESTBED_NAMESPACES#* }; ns=${ns%% *}
        for p in $(ip netns pids "$ns"); do [ "$(cat /proc/$p/comm 2>/dev/null)" = lockstep ] && kill -9 "$p"; done
        t0=$(date +%s.%N)
        wait $job; status=$?
        echo "job ended with status $status after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }') s"
        cat "$3.log" | tail -n 5
        """
        let r = try cli.run([testbed, "--hosts", "2", "--", "bash", "-c", script, "kill-test", train, config, "\(out)/run"],
                            environment: ["LOCKSTEP_BIN": cli.lockstep], timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        let pattern = try NSRegularExpression(pattern: "job ended with status (\\d+) after ([0-9.]+) s")
        guard let m = pattern.firstMatch(in: r.output, range: NSRange(r.output.startIndex..., in: r.output)),
              let status = Int(r.output[Range(m.range(at: 1), in: r.output)!]),
              let seconds = Double(r.output[Range(m.range(at: 2), in: r.output)!]) else {
            return XCTFail("no timing in the output: \(r.output)")
        }
        XCTAssertNotEqual(status, 0, "a job that lost a rank must fail: \(r.output)")
        XCTAssertLessThan(seconds, 10, r.output)
    }
}
