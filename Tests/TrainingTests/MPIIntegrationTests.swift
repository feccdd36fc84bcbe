// End-to-end runs of the lockstep binary under mpirun.
import Collectives
import Foundation
import Training
import TrainingTestSupport
import XCTest

final class MPIIntegrationTests: XCTestCase {
    let tests = CLI()
    var lockstep: String { tests.lockstep }

    /// Every tensor of a run's step-50 checkpoint (parameters, buffers, optimizer state) as bits.
    func testExactModeHasTheSameBitsUnderMPIAndWithTwoBLASThreads() throws {
        try tests.requireMPI()
        let dir = try writeIDXDirectory()
        let config = try tests.writeConfig(smallCNNConfig(dataPath: dir))
        let runs = NSTemporaryDirectory() + "lockstep-mpi-exact-\(UUID().uuidString)"
        // Sync BN, dropout, flips, crops, accumulation and clipping, in chunks of 4 samples.
        let args = ["train", "--config", config] + ["train.exact=true", "train.chunk=4", "train.max_steps=50", "train.epochs=5",
                                                    "train.accumulate_steps=2", "optimizer.clip_norm=0.5"].flatMap { ["--set", $0] }
        let single = try tests.run([lockstep] + args + ["--set", "output.dir=\(runs)/one"])
        XCTAssertEqual(single.status, 0, single.output)
        let reference = try checkpointBits("\(runs)/one")
        XCTAssertGreaterThan(reference.count, 10, "parameters, buffers and optimizer state")
        func assertSame(_ name: String, _ run: CLI.Run) throws {
            XCTAssertEqual(run.status, 0, run.output)
            guard run.status == 0 else { return }
            let got = try checkpointBits("\(runs)/\(name)")
            XCTAssertEqual(Set(got.keys), Set(reference.keys), name)
            for (key, bits) in reference where got[key] != bits {
                XCTFail("\(name): \(key) differs from the one-process run")
            }
        }
        // One rank with two BLAS threads: exact mode pins one, so the bits cannot change.
        try assertSame("threads2", try tests.run([lockstep] + args + ["--set", "output.dir=\(runs)/threads2"],
                                                 environment: ["OPENBLAS_NUM_THREADS": "2"]))
        // One host: shared memory by default (an MPI-3 window); the messages that ranks on
        // several hosts send, forced on this one with train.shared_memory=false.
        for (ranks, tcp, shared) in [(2, false, true), (4, false, true), (4, false, false), (2, true, false)] {
            let name = "np\(ranks)\(tcp ? "-tcp" : "")\(shared ? "" : "-messages")"
            try assertSame(name, try tests.mpirun(ranks, args + ["--set", "output.dir=\(runs)/\(name)", "--set", "train.shared_memory=\(shared)"], tcp: tcp))
        }
        // A window that would not fit in /dev/shm (a container's 64 MB, here a stand-in limit)
        // is not asked for: the ranks say so and send messages, with the same bits.
        let small = try tests.mpirun(2, args + ["--set", "output.dir=\(runs)/small-shm"], env: ["LOCKSTEP_SHARED_MEMORY_LIMIT": "1000"])
        XCTAssertTrue(small.output.contains("would not fit in /dev/shm"), small.output)
        try assertSame("small-shm", small)
        // Local BN at 2 ranks differs measurably (so the comparison above can fail).
        let local = try tests.mpirun(2, args + ["--bn", "local", "--set", "output.dir=\(runs)/local"])
        XCTAssertEqual(local.status, 0, local.output)
        if local.status == 0 {
            let lp = try checkpointBits("\(runs)/local")
            let key = "conv1.weight"
            let a = reference[key]!.map(Float.init(bitPattern:)), b = lp[key]!.map(Float.init(bitPattern:))
            let diff = zip(a, b).map { abs($0 - $1) }.max()!
            XCTAssertGreaterThan(diff / a.map(abs).max()!, 1e-3)
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

    func testAStoppedRankEndsTheJobWithinTheTimeoutNamingIt() throws {
        try tests.requireMPI()
        let dir = try writeIDXDirectory()
        let config = try tests.writeConfig(smallCNNConfig(dataPath: dir))
        let out = NSTemporaryDirectory() + "lockstep-stall-\(UUID().uuidString)"
        let (p, pipe) = try tests.start(["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS",
                                         lockstep, "train", "--config", config, "--set", "train.max_steps=1000000", "--set", "train.epochs=100000",
                                         "--set", "train.log_every=5", "--set", "check.collective_timeout=3", "--set", "output.dir=\(out)"])
        let deadline = Date().addingTimeInterval(60)
        while (FileManager.default.contents(atPath: out + "/metrics.jsonl")?.count ?? 0) == 0 && Date() < deadline { usleep(50_000) }
        // Rank 1 is the process whose environment says so.
        let pids = (try FileManager.default.contentsOfDirectory(atPath: "/proc")).compactMap { Int32($0) }
        let rank1 = pids.first { pid in
            guard let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                  let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: cmd, as: UTF8.self).contains(out) && env.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=1" }
        }
        let pid = try XCTUnwrap(rank1, "rank 1 not found")
        kill(pid, SIGSTOP)
        let stopped = Date()
        while p.isRunning && Date().timeIntervalSince(stopped) < 30 { usleep(50_000) }
        if p.isRunning { kill(pid, SIGKILL); p.terminate() }
        p.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        // The timeout (3 s), a roll call (up to 2 s), then MPI_Abort: within the timeout + 5 s.
        XCTAssertLessThan(Date().timeIntervalSince(stopped), 3 + 5, output)
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertTrue(output.contains("rank 1 (\(hostName())) did not arrive"), output)   // named with its host
        XCTAssertTrue(output.contains("timed out after 3 s"), output)
    }
}
