// The lockstep binary end to end: preemption and resume under mpirun, crash safety of
// checkpoints under SIGKILL, eval and inspect, bad checkpoints, and Python interoperability.
import Foundation
import TrainingTestSupport
import XCTest

final class CommandLineTests: XCTestCase {
    var lockstep: String { buildProductsDirectory().appendingPathComponent("lockstep").path }
    let tests = CLI()

    func requireBinary() throws {
        guard FileManager.default.isExecutableFile(atPath: lockstep) else { throw XCTSkip("\(lockstep) not built") }
    }

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "lockstep-cli-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    /// A config whose run takes a few seconds: 2400 samples, a wider conv, max_steps steps.
    func longConfig(data: String, maxSteps: Int, schedule: String = "cosine", exact: Bool = false) -> String {
        """
        name: long
        data: {path: \(data), classes: 4, augment: {horizontal_flip: true}}
        model:
          - conv: {out: 16, kernel: 3, padding: 1, bias: false}
          - batchnorm: {}
          - relu
          - maxpool: {size: 2}
          - flatten
          - dense: {out: 32}
          - batchnorm: {}
          - relu
          - dropout: {p: 0.2}
          - dense: {out: 4}
        optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}
        schedule: {name: \(schedule)}
        train: {epochs: 100, max_steps: \(maxSteps), global_batch: 24, log_every: 10, seed: 5, exact: \(exact), chunk: 4}
        checkpoint: {every_steps: 50, every_epochs: 0}
        """
    }

    func waitForLines(_ path: String, atLeast n: Int, timeout: Double = 60) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: path, encoding: .utf8), text.split(separator: "\n").count >= n { return true }
            usleep(20_000)
        }
        return false
    }

    func signalRanks(_ pattern: String, _ sig: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/pkill")
        p.arguments = ["-\(sig)", "-f", pattern]
        try? p.run()
        p.waitUntilExit()
    }

    func testSigtermUnderMPIThenResumeAutoIsExact() throws {
        try tests.requireMPI()
        let data = try writeIDXDirectory(trainCount: 2400, testCount: 100)
        // Exact mode, so that resuming on another world size can be compared bit for bit.
        let config = try tests.writeConfig(longConfig(data: data, maxSteps: 1500, schedule: "constant", exact: true))
        // The uninterrupted reference, 2 ranks.
        let full = try tests.mpirun(2, ["train", "--config", config, "--dump-parameters", "--set", "output.dir=\(tempDir())"], timeout: 300)
        XCTAssertEqual(full.status, 0, full.output)
        let reference = tests.parameters(full.output)
        XCTAssertFalse(reference.isEmpty)
        // The same run, stopped by SIGTERM to every rank (as Slurm does) after its first log lines.
        let dir = tempDir()
        let (p, pipe) = try tests.start(["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS",
                                   lockstep, "train", "--config", config, "--set", "output.dir=\(dir)"])
        XCTAssertTrue(waitForLines(dir + "/metrics.jsonl", atLeast: 8), "the run never logged")
        signalRanks("^\(lockstep) train --config \(config)", "TERM")
        p.waitUntilExit()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 75, "documented exit status after a signal: \(out)")
        let ckpts = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("ckpt-step") }.sorted()
        let last = try XCTUnwrap(ckpts.last)
        let stoppedAt = Int(last.dropFirst("ckpt-step".count).prefix(8))!
        XCTAssertLessThan(stoppedAt, 1500, "the run finished before the signal; nothing was tested")
        // Keep a copy: the resumed run below prunes old checkpoints.
        let saved = tempDir() + "/" + last
        try FileManager.default.copyItem(atPath: "\(dir)/\(last)", toPath: saved)
        // Resume on the same world size: bitwise equal.
        let resumed = try tests.mpirun(2, ["train", "--config", config, "--resume", "auto", "--dump-parameters", "--set", "output.dir=\(dir)"], timeout: 300)
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.output.contains("resumed from \(dir)/\(last) at step \(stoppedAt)"), resumed.output)
        XCTAssertEqual(tests.parameters(resumed.output), reference, "resume at the same world size must be bit-exact")
        // Resume the same checkpoint on 1 rank for 20 more steps (the schedule is constant, so
        // max_steps can change): bit for bit what 2 ranks trained straight there give.
        let to = "train.max_steps=\(stoppedAt + 20)"
        let straight = try tests.mpirun(2, ["train", "--config", config, "--dump-parameters", "--set", to, "--set", "output.dir=\(tempDir())"], timeout: 300)
        let single = try tests.run([lockstep, "train", "--config", config, "--resume", saved, "--dump-parameters", "--set", to,
                                    "--set", "output.dir=\(tempDir())"], timeout: 300)
        XCTAssertEqual(single.status, 0, single.output)
        let p1 = tests.parameters(single.output), p2 = tests.parameters(straight.output)
        XCTAssertEqual(p1.count, reference.count)
        XCTAssertEqual(p2.count, reference.count)
        XCTAssertEqual(p1, p2, "exact mode: resuming on 1 rank equals 2 ranks bit for bit")
        XCTAssertNotEqual(p1, reference, "20 steps after the checkpoint is not the end of the full run")
    }

    func testSigkillDuringSavesNeverLeavesACorruptCheckpoint() throws {
        try requireBinary()
        let data = try writeIDXDirectory(trainCount: 2400, testCount: 100)
        // A wide dense layer makes each checkpoint ~13 MB, so kills land inside saves.
        let config = try tests.writeConfig(longConfig(data: data, maxSteps: 100_000)
            .replacingOccurrences(of: "dense: {out: 32}", with: "dense: {out: 2048}")
            .replacingOccurrences(of: "every_steps: 50", with: "every_steps: 1"))
        let dir = tempDir()
        for attempt in 0..<8 {
            let (p, _) = try tests.start([lockstep, "train", "--config", config, "--set", "output.dir=\(dir)",
                                    "--set", "checkpoint.keep=2"] + (attempt > 0 ? ["--resume", "auto"] : []))
            _ = waitForLines(dir + "/metrics.jsonl", atLeast: 1 + attempt, timeout: 60)
            usleep(UInt32(10_000 + attempt * 37_000))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasSuffix(".safetensors") && !name.hasPrefix(".") {
                let r = try tests.run([lockstep, "inspect", "\(dir)/\(name)"])
                XCTAssertEqual(r.status, 0, "attempt \(attempt): \(name) is corrupt: \(r.output)")
            }
        }
        XCTAssertNotNil(try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasPrefix("ckpt-step") })
    }

    func testEvalUnderMPICountsEverySampleOnceAndInspectWorks() throws {
        try tests.requireMPI()
        let data = try writeIDXDirectory(testCount: 61)
        let dir = tempDir()
        let config = try tests.writeConfig(smallCNNConfig(dataPath: data))
        let train = try tests.run([lockstep, "train", "--config", config, "--set", "output.dir=\(dir)"])
        XCTAssertEqual(train.status, 0, train.output)
        let single = try tests.run([lockstep, "eval", "--checkpoint", "\(dir)/best.safetensors"])
        XCTAssertEqual(single.status, 0, single.output)
        XCTAssertTrue(single.output.contains("samples 61\n"), single.output)
        for ranks in [2, 3] {
            let r = try tests.mpirun(ranks, ["eval", "--checkpoint", "\(dir)/best.safetensors"])
            XCTAssertEqual(r.status, 0, r.output)
            XCTAssertTrue(r.output.contains("samples 61\n"), r.output)
            let line = { (o: String) in o.split(separator: "\n").first { $0.hasPrefix("test loss") }.map(String.init) ?? "" }
            XCTAssertEqual(line(r.output), line(single.output))
        }
        let inspect = try tests.run([lockstep, "inspect", "\(dir)/best.safetensors"])
        XCTAssertEqual(inspect.status, 0)
        XCTAssertTrue(inspect.output.contains("conv1.weight"), inspect.output)
        XCTAssertTrue(inspect.output.contains("optimizer.momentum.conv1.weight"), inspect.output)
    }

    func testBadCheckpointFailsOnEveryRank() throws {
        try tests.requireMPI()
        let data = try writeIDXDirectory()
        let config = try tests.writeConfig(smallCNNConfig(dataPath: data))
        let bad = tempDir() + "/bad.safetensors"
        XCTAssertTrue(FileManager.default.createFile(atPath: bad, contents: Data([1, 2, 3])))
        for args in [["train", "--config", config, "--resume", bad], ["eval", "--checkpoint", bad]] {
            let r = try tests.mpirun(2, args, timeout: 60)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.output.contains("\(bad): not a valid checkpoint"), r.output)
            XCTAssertLessThan(r.seconds, 10)
        }
        let r = try tests.run([lockstep, "inspect", bad])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.output.contains("shorter than the 8-byte header"), r.output)
    }

    func testPythonSafetensorsAndTensorBoardReadOurFiles() throws {
        try requireBinary()
        let probe = try tests.run(["python3", "-c", "import safetensors, numpy, tensorboard"])
        guard probe.status == 0 else {
            throw XCTSkip("python3 with safetensors, numpy and tensorboard is not installed (.ci/run installs them)")
        }
        let data = try writeIDXDirectory()
        let dir = tempDir()
        let config = try tests.writeConfig(smallCNNConfig(dataPath: data).replacingOccurrences(of: "max_steps: 8", with: "max_steps: 0")
            .replacingOccurrences(of: "epochs: 1", with: "epochs: 2"))
        let train = try tests.run([lockstep, "train", "--config", config, "--set", "output.dir=\(dir)"])
        XCTAssertEqual(train.status, 0, train.output)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("python/interop.py").path
        let py = try tests.run(["python3", script, dir, "\(dir)/best.safetensors"], timeout: 120)
        XCTAssertEqual(py.status, 0, py.output)
        let inspect = try tests.run([lockstep, "inspect", "\(dir)/best.safetensors"])
        // Every tensor: Python's mean/std/count equal ours.
        var checked = 0
        for line in py.output.split(separator: "\n") where line.hasPrefix("tensor ") {
            let f = line.split(separator: " ")
            let name = String(f[1]), mean = Double(f[2])!, std = Double(f[3])!, count = Int(f[4])!
            guard let ours = inspect.output.split(separator: "\n").first(where: { $0.hasPrefix(name + " ") }) else {
                XCTFail("inspect does not list \(name)"); continue
            }
            let g = ours.split(separator: " ", omittingEmptySubsequences: true)
            let n = g.count
            XCTAssertEqual(Int(g[n - 3]), count, name)
            XCTAssertEqual(Double(g[n - 2])!, mean, accuracy: 1e-5 * max(1, abs(mean)), name)
            XCTAssertEqual(Double(g[n - 1])!, std, accuracy: 1e-5 * max(1, std), name)
            checked += 1
        }
        XCTAssertGreaterThan(checked, 10)
        // TensorBoard sees the per-epoch test accuracy that metrics.jsonl holds.
        let metrics = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["kind"] as? String == "epoch" }
        let tb = py.output.split(separator: "\n").filter { $0.hasPrefix("tb epoch/test_accuracy ") }
        XCTAssertEqual(tb.count, metrics.count)
        for (line, m) in zip(tb, metrics) {
            let f = line.split(separator: " ")
            XCTAssertEqual(Int(f[2]), m["step"] as? Int)
            XCTAssertEqual(Double(f[3])!, (m["test_accuracy"] as! NSNumber).doubleValue, accuracy: 1e-6)
        }
    }

    func testInvalidRankCountsAreRefusedByEverySubcommand() throws {
        try requireBinary()
        for args in [["eval", "--checkpoint", "x.safetensors", "--simulate-ranks=-3"],
                     ["eval", "--checkpoint", "x.safetensors", "--simulate-ranks", "0"],
                     ["train", "--config", "x.yaml", "--simulate-ranks", "0"],
                     ["ranks", "--simulate-ranks=-1"]] {
            let r = try tests.run([lockstep] + args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.output.contains("--simulate-ranks must be at least 1"), "\(args): \(r.output)")
        }
    }

    /// `bench --against` builds both trainers on data loaded once, so an override of the data is
    /// refused with a message naming it, before anything is loaded.
    func testBenchAgainstRefusesDataOverrides() throws {
        try requireBinary()
        for key in ["data.path=/tmp", "data=x"] {
            let r = try tests.run([lockstep, "bench", "--config", "x.yaml", "--against", key])
            XCTAssertNotEqual(r.status, 0, key)
            XCTAssertTrue(r.output.contains("--against \(key): both trainers share the data"), "\(key): \(r.output)")
        }
    }

    func testLaunchTrainTurnsSigtermIntoACheckpointAndExit75() throws {
        try tests.requireMPI()
        // This file is Tests/TrainingTests/CommandLineTests.swift: the checkout is three levels up.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let script = root.appendingPathComponent("launch/train").path
        let data = try writeIDXDirectory(trainCount: 2400, testCount: 100)
        let config = try tests.writeConfig(longConfig(data: data, maxSteps: 100_000))
        let dir = tempDir()
        let (p, pipe) = try tests.start([script, "-n", "2", config, "--set", "output.dir=\(dir)"], environment: ["LOCKSTEP_BIN": lockstep])
        XCTAssertTrue(waitForLines(dir + "/metrics.jsonl", atLeast: 3), "the run never logged")
        p.terminate()   // SIGTERM to launch/train itself, as a scheduler sends it
        p.waitUntilExit()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 75, out)
        XCTAssertTrue(out.contains("stopping at step"), out)
        let ckpts = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("ckpt-step") }
        XCTAssertFalse(ckpts.isEmpty, "a checkpoint must be written before exiting")
    }

    func testFuzzHarnessesReplayTheirSeedCorpus() throws {
        // fuzz/run drives these harnesses with libFuzzer; built plainly they replay inputs, so the
        // suite checks that every seed parses without a crash.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for harness in ["idx", "safetensors", "config"] {
            let bin = buildProductsDirectory().appendingPathComponent("fuzz-\(harness)").path
            guard FileManager.default.isExecutableFile(atPath: bin) else { throw XCTSkip("\(bin) not built") }
            let dir = root.appendingPathComponent("fuzz/corpus/\(harness)").path
            let seeds = try FileManager.default.contentsOfDirectory(atPath: dir).sorted().map { dir + "/" + $0 }
            XCTAssertFalse(seeds.isEmpty, dir)
            let r = try tests.run([bin] + seeds)
            XCTAssertEqual(r.status, 0, r.output)
            XCTAssertTrue(r.output.contains("replayed \(seeds.count) input(s)"), r.output)
        }
    }
}
