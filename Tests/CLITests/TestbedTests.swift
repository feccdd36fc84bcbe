// Multi-host runs on emulated hosts (launch/testbed: network namespaces, veth, a bridge, mpirun's
// rsh agent): ranks on separate hosts over TCP train the same bits as one process, and a rank
// killed on one host ends the job quickly. Skipped, with the testbed's one-line reason, where
// namespaces cannot be made (not root, no iproute2).
import Formats
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

    /// Node-local run directories ("{host}" in output.dir): node1's first rank keeps a copy of
    /// every checkpoint. A job that fails after its step-20 checkpoint loses node0 with its disk
    /// (its directory is deleted); restarted with rank 0 on node1 (mpirun started there), the run
    /// resumes from node1's copy and ends with the one-process run's bits.
    func testLosingRankZerosHostAndItsDiskResumesFromTheCopyOnTheNextHost() throws {
        try requireTestbed()
        let data = try writeIDXDirectory()
        let config = try cli.writeConfig(smallMLPConfig(extra: "checkpoint: {every_steps: 10}")
            .replacingOccurrences(of: "path: /nonexistent", with: "path: \(data)").replacingOccurrences(of: "max_steps: 50", with: "max_steps: 40"))
        let runs = makeTempDir("lockstep-replica")
        let single = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(runs)/one"])
        XCTAssertEqual(single.status, 0, single.output)
        let reference = try SafeTensorsFile.read(path: "\(runs)/one/ckpt-step00000040.safetensors")
        let dir = "output.dir=\(runs)/{host}/run"
        let failed = try cli.run([testbed, "--hosts", "2", "--", train, "-n", "2", config, "--set", dir],
                                 environment: ["LOCKSTEP_BIN": cli.lockstep, "LOCKSTEP_FAULT_RANK": "1", "LOCKSTEP_FAULT_STEP": "25"], timeout: 120)
        XCTAssertNotEqual(failed.status, 0, failed.output)
        XCTAssertTrue(failed.output.contains("checkpoints also kept by rank 1 on node1"), failed.output)
        for host in ["node0", "node1"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(runs)/\(host)/run/ckpt-step00000020.safetensors"), host)
        }
        try FileManager.default.removeItem(atPath: "\(runs)/node0")
        let script = """
        tac "$LOCKSTEP_TESTBED_HOSTFILE" > "$3/hosts"
        "$LOCKSTEP_TESTBED_ON" node1 env LOCKSTEP_TESTBED_HOSTFILE="$3/hosts" "$1" -n 2 "$2" --set "$4" --resume auto
        """
        let resumed = try cli.run([testbed, "--hosts", "2", "--", "bash", "-c", script, "replica-test", train, config, runs, dir],
                                  environment: ["LOCKSTEP_BIN": cli.lockstep], timeout: 120)
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.output.contains("resumed from \(runs)/node1/run/ckpt-step00000020.safetensors"), resumed.output)
        let final = try SafeTensorsFile.read(path: "\(runs)/node1/run/ckpt-step00000040.safetensors")
        XCTAssertEqual(final.entries.map(\.name), reference.entries.map(\.name))
        for e in reference.entries {
            XCTAssertEqual(final.entry(e.name).map { final.values($0).map(\.bitPattern) }, reference.values(e).map(\.bitPattern), e.name)
        }
    }
}
