// One writer per run directory: a second lock in the same process and a second `lockstep train`
// on a directory in use are refused by name and change nothing; stale locks (holder gone) are
// taken over with a warning; the fallback by contents on filesystems without flock.
import Collectives
import Configuration
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class RunLockTests: XCTestCase {
    func tempDir() -> String { makeTempDir("lockstep-lock") }
    let host = hostName()

    /// The pid of a process that has ended (and been reaped), so no process has it now.
    func deadPID() throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        return p.processIdentifier
    }

    func contents(_ dir: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) { out[name] = FileManager.default.contents(atPath: dir + "/" + name) }
        return out
    }

    func testASecondLockInTheSameProcessIsRefusedByNameUntilTheFirstIsReleased() throws {
        let dir = tempDir() + "/new/run"   // created by the lock
        let first = try RunLock(directory: dir)
        XCTAssertEqual(first.warnings, [])
        let line = try String(contentsOfFile: dir + "/.lockstep.lock", encoding: .utf8)
        XCTAssertTrue(line.hasPrefix("host \(host) pid \(getpid()) started 20"), line)
        XCTAssertTrue(line.hasSuffix("Z\n"), "ISO-8601 UTC: \(line)")
        // flock locks belong to an open file description: a second open() in this process conflicts.
        XCTAssertThrowsError(try RunLock(directory: dir)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.hasPrefix("\(dir): another lockstep run is writing here (host \(host), pid \(getpid()), since 20"), message)
            XCTAssertTrue(message.hasSuffix("; wait for it to end or choose another output.dir"), message)
            XCTAssertFalse(message.contains("\n"))
        }
        XCTAssertEqual(try String(contentsOfFile: dir + "/.lockstep.lock", encoding: .utf8), line, "the refused lock changes nothing")
        first.release()
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/.lockstep.lock"), "a clean release removes the file")
        let again = try RunLock(directory: dir)
        XCTAssertEqual(again.warnings, [], "nothing stale after a clean release")
        again.release()
        again.release()   // a second release does nothing
    }

    func testALockLeftByAProcessThatIsGoneIsTakenOverWithAWarning() throws {
        let dir = tempDir()
        let pid = try deadPID()
        try "host \(host) pid \(pid) started 2020-01-01T00:00:00Z\n".write(toFile: dir + "/.lockstep.lock", atomically: true, encoding: .utf8)
        let lock = try RunLock(directory: dir)
        XCTAssertEqual(lock.warnings, ["lockstep: taking over the lock of \(dir) left by host \(host) pid \(pid) (that process is gone)"])
        XCTAssertTrue(try String(contentsOfFile: dir + "/.lockstep.lock", encoding: .utf8).hasPrefix("host \(host) pid \(getpid()) "))
        lock.release()
    }

    func testWithoutFlockTheContentsDecide() throws {
        let dir = tempDir()
        let file = dir + "/.lockstep.lock"
        // This process is alive: refused.
        try "host \(host) pid \(getpid()) started 2020-01-01T00:00:00Z\n".write(toFile: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunLock(directory: dir, useFlock: false)) {
            XCTAssertTrue("\($0)".contains("(host \(host), pid \(getpid()), since 2020-01-01T00:00:00Z)"), "\($0)")
        }
        // Another host: refused, and told how to clear a lock whose run is gone.
        try "host elsewhere-7 pid 12 started 2020-01-01T00:00:00Z\n".write(toFile: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunLock(directory: dir, useFlock: false)) {
            XCTAssertTrue("\($0)".hasSuffix("(host elsewhere-7, pid 12, since 2020-01-01T00:00:00Z); wait for it to end or choose another output.dir; if that run is gone, remove \(file)"), "\($0)")
        }
        // This host, a dead pid: taken over.
        let pid = try deadPID()
        try "host \(host) pid \(pid) started 2020-01-01T00:00:00Z\n".write(toFile: file, atomically: true, encoding: .utf8)
        let lock = try RunLock(directory: dir, useFlock: false)
        XCTAssertEqual(lock.warnings.last, "lockstep: taking over the lock of \(dir) left by host \(host) pid \(pid) (that process is gone)")
        XCTAssertThrowsError(try RunLock(directory: dir, useFlock: false), "its own live line now refuses others")
        lock.release()
        XCTAssertFalse(FileManager.default.fileExists(atPath: file))
    }

    func testEveryRankOfARunOnALockedDirectoryFailsWithTheSameLine() throws {
        let dir = tempDir()
        let holder = try RunLock(directory: dir)
        let before = try contents(dir)
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml", overrides: ["output.dir=\(dir)", "train.max_steps=2"])
        let data = makeData()
        let messages = try ThreadCommunicator.run(size: 2) { comm -> String in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            do { try trainer.run(resume: "auto"); return "trained" } catch { return "\(error)" }
        }
        XCTAssertEqual(messages[0], messages[1])
        XCTAssertTrue(messages[0].contains("another lockstep run is writing here (host \(host), pid \(getpid())"), messages[0])
        XCTAssertEqual(try contents(dir), before, "a refused run touches no file")
        holder.release()
    }

    /// A `lockstep train` paused (SIGSTOP) mid-run holds the lock: a second one fails naming it and
    /// changes no byte; after the first is SIGKILLed a third takes the stale lock over.
    func testASecondTrainOnADirectoryInUseIsRefusedAndAStaleLockTakenOver() throws {
        let cli = CLI()
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let data = try writeIDXDirectory(trainCount: 2400)
        let dir = tempDir() + "/run"
        let config = try cli.writeConfig(smallCNNConfig(dataPath: data))
        // 600 steps an epoch, 5 epochs, a record every step, and no checkpoint before the end.
        let long = ["--set", "train.max_steps=0", "--set", "train.epochs=5", "--set", "train.global_batch=4",
                    "--set", "train.log_every=1", "--set", "checkpoint.every_epochs=0"]
        let (first, pipe) = try cli.start([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)"] + long)
        DispatchQueue(label: "drain").async { _ = pipe.fileHandleForReading.readDataToEndOfFile() }
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(20)
        while first.isRunning && Date() < deadline && !(FileManager.default.contents(atPath: dir + "/metrics.jsonl").map { $0.contains(UInt8(ascii: "\n")) } ?? false) {
            usleep(2_000)
        }
        XCTAssertEqual(kill(first.processIdentifier, SIGSTOP), 0)
        try XCTSkipUnless(first.isRunning, "the first run ended before it could be paused")
        let before = try contents(dir)
        XCTAssertNotNil(before[".lockstep.lock"])
        let second = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)", "--resume", "auto"] + long, timeout: 30)
        XCTAssertNotEqual(second.status, 0, second.output)
        XCTAssertTrue(second.output.contains("\(dir): another lockstep run is writing here (host \(host), pid \(first.processIdentifier), since "), second.output)
        XCTAssertEqual(try contents(dir), before, "the refused run must not change a byte of the directory")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        let third = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)", "--resume", "auto"]
                                + long + ["--set", "train.max_steps=3"], timeout: 30)
        XCTAssertEqual(third.status, 0, third.output)
        XCTAssertTrue(third.output.contains("lockstep: taking over the lock of \(dir) left by host \(host) pid \(first.processIdentifier) (that process is gone)"), third.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/.lockstep.lock"), "released at the end")
    }
}
