// One history after a resume: the TFRecord and protobuf readers, cutting metrics.jsonl and event
// files back to a step, and a run killed after a checkpoint and resumed whose logs equal an
// uninterrupted run's, record for record (TensorBoard's own reader agrees when installed).
import Collectives
import Configuration
import Formats
import Foundation
import Reports
@testable import Training
import TrainingTestSupport
import XCTest

final class RunHistoryTests: XCTestCase {
    func tempDir() -> String { makeTempDir("lockstep-history") }

    /// Steps of every event in the file (nil: no step, the file_version header).
    func eventSteps(_ file: String) throws -> [Int64?] {
        let bytes = [UInt8](try XCTUnwrap(FileManager.default.contents(atPath: file)))
        return TFRecordReader.read(bytes).records.map { ProtoScan.eventStep($0.data) }
    }

    func testTFRecordReaderDropsATruncatedTailAndStopsAtABadChecksum() throws {
        let dir = tempDir()
        do {
            let writer = try TensorBoardWriter(directory: dir)
            for step in 1...5 { writer.scalars([("train/loss", Double(step)), ("train/lr", 0.1)], step: step) }
        }
        let file = try XCTUnwrap(RunDirectory.eventFiles(in: dir).first)
        let bytes = [UInt8](try XCTUnwrap(FileManager.default.contents(atPath: file)))
        let whole = TFRecordReader.read(bytes)
        XCTAssertNil(whole.damage)
        XCTAssertEqual(whole.records.map { ProtoScan.eventStep($0.data) }, [nil, 1, 2, 3, 4, 5])
        XCTAssertEqual(ProtoScan.eventTags(whole.records[2].data), ["train/loss", "train/lr"])
        // Killed mid-write: the last record's first 20 bytes.
        let last = whole.records[5].frame
        let cut = TFRecordReader.read(Array(bytes[..<(last.lowerBound + 20)]))
        XCTAssertEqual(cut.records.count, 5)
        XCTAssertTrue(cut.damage?.contains("truncated last record at byte \(last.lowerBound)") ?? false, "\(cut.damage ?? "nil")")
        // A flipped data byte in record 3: records 0-2 are read, then the damage is named.
        var flipped = bytes
        flipped[whole.records[3].data.startIndex + 2] ^= 0x40
        let bad = TFRecordReader.read(flipped)
        XCTAssertEqual(bad.records.count, 3)
        XCTAssertTrue(bad.damage?.contains("bad checksum") ?? false, "\(bad.damage ?? "nil")")
    }

    func testCutBackKeepsStepsUpToNDropsTruncatedTailsAndAppendsTheResumeRecord() throws {
        let dir = tempDir()
        do {
            let writer = try TensorBoardWriter(directory: dir)
            for step in 1...6 { writer.scalars([("train/loss", Double(step))], step: step) }
        }
        let file = try XCTUnwrap(RunDirectory.eventFiles(in: dir).first)
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: file))
        handle.seekToEndOfFile()
        handle.write(Data([9, 0, 0, 0, 0, 0, 0, 0, 1]))   // a record killed after 9 of its bytes
        try handle.close()
        let metrics = (1...6).map { "{\"kind\":\"train\",\"step\":\($0)}\n" }.joined() + "{\"kind\":\"epoch\",\"step\":6}\n{\"kind\":\"tr"
        try metrics.write(toFile: dir + "/metrics.jsonl", atomically: true, encoding: .utf8)
        let notes = try RunDirectory.cutBack(dir, to: ResumeRecord(step: 4, worldSize: 3, wallTime: 1_700_000_000))
        XCTAssertEqual(try eventSteps(file), [nil, 1, 2, 3, 4])
        XCTAssertNil(TFRecordReader.read([UInt8](FileManager.default.contents(atPath: file)!)).damage)
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(lines, (1...4).map { "{\"kind\":\"train\",\"step\":\($0)}" }
                       + ["{\"kind\":\"resume\",\"step\":4,\"wall_time\":1700000000,\"world_size\":3}"])
        XCTAssertEqual(notes.count, 2, "\(notes)")
        XCTAssertTrue(notes.contains { $0.contains("metrics.jsonl: dropped a truncated last line") }, "\(notes)")
        XCTAssertTrue(notes.contains { $0.contains("dropped a truncated last record") }, "\(notes)")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }, [], "no temporary file left")
    }

    /// 2 epochs of 10 steps, a progress record every step, a checkpoint every 3 steps and none at
    /// epoch ends (so the newest checkpoint before step 12 is 9, before the epoch record at 10);
    /// exact mode, so that the resumed losses are bit for bit the uninterrupted ones.
    func config(dir: String) throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml",
                                 overrides: ["output.dir=\(dir)", "train.max_steps=0", "train.epochs=2", "train.log_every=1",
                                             "checkpoint.every_steps=3", "checkpoint.every_epochs=0",
                                             "train.exact=true", "train.chunk=4"])
    }

    func train(dir: String, resume: String?, stopAt: Int?) throws {
        let cfg = try config(dir: dir)
        let data = makeData()
        _ = try ThreadCommunicator.run(size: 2) { comm -> Int in
            let trainer = try Trainer(config: cfg, communicator: comm, data: data, console: Console(isEnabled: false))
            trainer.stopAtStep = stopAt
            do { try trainer.run(resume: resume) } catch is Preempted {}
            return 0
        }
    }

    func records(_ dir: String) throws -> [[String: Any]] {
        let text = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8)
        return try text.split(separator: "\n").map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
    }

    /// Every (tag, step) of the directory's event files, in file order.
    func scalarKeys(_ dir: String) throws -> [String] {
        try RunDirectory.eventFiles(in: dir).flatMap { file -> [String] in
            let bytes = [UInt8](try XCTUnwrap(FileManager.default.contents(atPath: file)))
            return TFRecordReader.read(bytes).records.flatMap { r in
                ProtoScan.eventTags(r.data).map { "\($0)@\(ProtoScan.eventStep(r.data) ?? -1)" }
            }
        }
    }

    func testAResumedRunLeavesTheLogsOfAnUninterruptedOne() throws {
        let full = tempDir(), dir = tempDir()
        try train(dir: full, resume: nil, stopAt: nil)
        // Killed at step 12, 3 steps after the checkpoint at step 9 and past the epoch record at 10.
        // stopAtStep writes a checkpoint at 12 as a stop signal would; a SIGKILL would not, so
        // that checkpoint is deleted, and half-written last records are added as a kill leaves them.
        try train(dir: dir, resume: nil, stopAt: 12)
        try FileManager.default.removeItem(atPath: dir + "/ckpt-step00000012.safetensors")
        XCTAssertEqual(Checkpointer.newest(in: dir), dir + "/ckpt-step00000009.safetensors")
        XCTAssertTrue(try records(dir).contains { $0["kind"] as? String == "epoch" && $0["step"] as? Int == 10 }, "the cut must cross an epoch record")
        let events = try XCTUnwrap(RunDirectory.eventFiles(in: dir).first)
        for (file, tail) in [(events, Data([40, 0, 0, 0, 0, 0, 0, 0, 7, 7])), (dir + "/metrics.jsonl", Data("{\"kind\":\"train\",\"st".utf8))] {
            let h = try XCTUnwrap(FileHandle(forWritingAtPath: file))
            h.seekToEndOfFile(); h.write(tail); try h.close()
        }
        try train(dir: dir, resume: "auto", stopAt: nil)

        // metrics.jsonl: the uninterrupted run's records, then one resume record, and no timings.
        let timing: Set<String> = ["samples_per_second", "seconds_per_step", "communication_seconds_per_step",
                                   "gradient_allreduce_seconds_per_step", "elapsed_seconds",
                                   "rank_compute_seconds_per_step", "stragglers"]   // timings, and what is judged from them
        func comparable(_ rs: [[String: Any]]) -> [NSDictionary] {
            rs.filter { $0["kind"] as? String != "resume" }.map { NSDictionary(dictionary: $0.filter { !timing.contains($0.key) }) }
        }
        let resumed = try records(dir), uninterrupted = try records(full)
        XCTAssertEqual(uninterrupted.count, 22, "20 progress and 2 epoch records")
        XCTAssertEqual(comparable(resumed), comparable(uninterrupted))
        let resumes = resumed.filter { $0["kind"] as? String == "resume" }
        XCTAssertEqual(resumes.count, 1)
        XCTAssertEqual(resumes.first?["step"] as? Int, 9)
        XCTAssertEqual(resumes.first?["world_size"] as? Int, 2)
        let steps = resumed.compactMap { $0["step"] as? Int }
        XCTAssertEqual(steps.count, resumed.count)
        XCTAssertEqual(steps, steps.sorted(), "step numbers never go back")
        XCTAssertEqual(try RunMetrics.load(dir).epochs.count, 2, "reports read past the resume record")

        // TensorBoard: each (tag, step) once, and the same set as the uninterrupted run.
        let keys = try scalarKeys(dir)
        XCTAssertEqual(RunDirectory.eventFiles(in: dir).count, 2)
        XCTAssertEqual(keys.count, Set(keys).count, "a (tag, step) written twice: \(Dictionary(grouping: keys) { $0 }.filter { $0.value.count > 1 }.keys.sorted())")
        XCTAssertEqual(Set(keys), Set(try scalarKeys(full)))
        try tensorBoardAgrees(dir, scalars: keys.count)
    }

    /// TensorBoard's EventAccumulator (not purging "orphaned" steps, which would hide repeats)
    /// reads the directory: no tag has a step twice, and it sees every scalar we wrote.
    func tensorBoardAgrees(_ dir: String, scalars: Int) throws {
        let cli = CLI()
        guard (try cli.run(["python3", "-c", "import tensorboard"])).status == 0 else { return }   // optional: CI installs it
        let script = """
        import sys
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0}, purge_orphaned_data=False)
        acc.Reload()
        n = 0
        for tag in acc.Tags()["scalars"]:
            steps = [e.step for e in acc.Scalars(tag)]
            assert len(steps) == len(set(steps)), f"{tag}: repeated steps {steps}"
            n += len(steps)
        print(f"scalars {n}")
        """
        let py = try cli.run(["python3", "-c", script, dir], timeout: 60)
        XCTAssertEqual(py.status, 0, py.output)
        XCTAssertTrue(py.output.contains("scalars \(scalars)"), py.output)
    }
}
