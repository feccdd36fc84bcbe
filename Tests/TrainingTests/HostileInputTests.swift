// Hostile input: a YAML alias bomb, a run directory that holds an earlier run, checkpoints with
// non-finite values or bad metadata, and invalid rank counts. Each is a one-line error that
// names the file, key or tensor, and nothing good is overwritten.
import Collectives
import Configuration
import Formats
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class HostileInputTests: XCTestCase {
    func tempDir() -> String { makeTempDir("lockstep-hostile") }

    func testAYAMLAliasBombIsRefusedQuicklyWithOneLine() throws {
        // 10 levels of 9 aliases: 9^10 ≈ 3.5e9 values if expanded, under a key nothing reads.
        var lines = ["  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        for i in 1...10 { lines.append("  a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 9).joined(separator: ", ") + "]") }
        let yaml = "name: bomb\nunknown:\n" + lines.joined(separator: "\n") + "\nmodel: [flatten, {dense: {out: 4}}]\n"
        let start = Date()
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: yaml, file: "bomb.yaml")) { error in
            let message = "\(error)"
            XCTAssertTrue(message.hasPrefix("bomb.yaml: the YAML expands to more than"), message)
            XCTAssertFalse(message.contains("\n"))
            XCTAssertLessThan(message.count, 300)
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        // Aliases within bounds still work.
        let small = try TrainingConfig.parse(yaml: "name: ok\nmodel: &m [flatten, {dense: {out: 4}}]\ndata: {classes: 4}\n", file: "ok.yaml")
        XCTAssertEqual(small.model.count, 2)
    }

    /// Trains 3 steps into `dir` (rank 0 of 2 thread ranks), with `resume`/`overwrite`.
    func train(dir: String, resume: String? = nil, overwrite: Bool = false, seed: Int = 3, steps: Int = 3) throws {
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml",
                                              overrides: ["output.dir=\(dir)", "train.max_steps=\(steps)", "train.seed=\(seed)"])
        let data = makeData()
        _ = try ThreadCommunicator.run(size: 2) { comm -> Int in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            try trainer.run(resume: resume, overwrite: overwrite)
            return 0
        }
    }

    func contents(_ dir: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
            out[name] = FileManager.default.contents(atPath: dir + "/" + name)
        }
        return out
    }

    func testAFreshRunLeavesAnEarlierRunUntouchedByteForByte() throws {
        let dir = tempDir()
        try train(dir: dir)
        let before = try contents(dir)
        XCTAssertNotNil(before["best.safetensors"])
        XCTAssertThrowsError(try train(dir: dir, steps: 2)) { error in
            XCTAssertTrue("\(error)".contains("\(dir) already holds a run"), "\(error)")
            XCTAssertTrue("\(error)".contains("--resume auto"), "\(error)")
        }
        XCTAssertEqual(try contents(dir), before, "nothing of the earlier run may change")
        // --overwrite starts afresh; --resume continues.
        try train(dir: dir, overwrite: true, steps: 2)
        XCTAssertNotNil(FileManager.default.contents(atPath: dir + "/ckpt-step00000002.safetensors"))
        XCTAssertNil(FileManager.default.contents(atPath: dir + "/ckpt-step00000003.safetensors"), "the old run's checkpoint is gone")
    }

    /// A checkpoint of 3 steps, its tensors and metadata.
    func checkpoint() throws -> (dir: String, file: SafeTensorsFile) {
        let dir = tempDir()
        try train(dir: dir)
        return (dir, try SafeTensorsFile.read(path: dir + "/ckpt-step00000003.safetensors"))
    }

    /// Writes `file` back with `tensor` poisoned or `metadata` changed, and resumes from it.
    func resumeFrom(_ file: SafeTensorsFile, poison tensor: String? = nil, metadata: [String: String] = [:], seed: Int = 3) throws {
        var values = file.entries.map { file.values($0) }
        if let tensor, let i = file.entries.firstIndex(where: { $0.name == tensor }) { values[i][1] = .nan }
        let bytes = try withExtendedLifetime(values) { () throws -> [UInt8] in
            var tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] = []
            for (i, e) in file.entries.enumerated() {
                tensors.append((e.name, e.shape, values[i].withUnsafeBufferPointer { UnsafeBufferPointer(start: $0.baseAddress, count: $0.count) }))
            }
            return try SafeTensorsFile.encode(tensors: tensors, metadata: file.metadata.merging(metadata) { $1 })
        }
        let path = tempDir() + "/bad.safetensors"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        try train(dir: tempDir(), resume: path, seed: seed, steps: 6)
    }

    func testCheckpointsWithNonFiniteValuesOrBadMetadataAreRefusedByName() throws {
        let (_, file) = try checkpoint()
        XCTAssertThrowsError(try resumeFrom(file, poison: "dense1.weight")) {
            XCTAssertTrue("\($0)".contains("bad.safetensors: tensor 'dense1.weight' holds nan at index 1"), "\($0)")
        }
        XCTAssertThrowsError(try resumeFrom(file, poison: "optimizer.momentum.conv1.weight")) {
            XCTAssertTrue("\($0)".contains("tensor 'optimizer.momentum.conv1.weight' holds nan"), "\($0)")
        }
        XCTAssertThrowsError(try resumeFrom(file, metadata: ["step": "999999999999"])) {
            XCTAssertTrue("\($0)".contains("metadata 'step' is 999999999999, beyond this run's 6 steps"), "\($0)")
        }
        XCTAssertThrowsError(try resumeFrom(file, metadata: ["epoch_sums": "1,2"])) {
            XCTAssertTrue("\($0)".contains("metadata 'epoch_sums' is '1,2'"), "\($0)")
        }
        XCTAssertThrowsError(try resumeFrom(file, metadata: ["optimizer_steps": "-4"])) {
            XCTAssertTrue("\($0)".contains("metadata 'optimizer_steps' is '-4'"), "\($0)")
        }
        XCTAssertThrowsError(try resumeFrom(file, seed: 4)) {
            XCTAssertTrue("\($0)".contains("saved with train.seed 3, this run uses 4"), "\($0)")
        }
        // The untouched file resumes.
        XCTAssertNoThrow(try resumeFrom(file))
    }

    func testUnreadableConfigsSayWhy() throws {
        let dir = tempDir()
        func config(_ name: String, _ bytes: [UInt8]) throws -> String {
            let path = dir + "/" + name
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            return path
        }
        let cases: [(String, String)] = [
            (dir + "/missing.yaml", "missing.yaml: no such config file"),
            (dir, "is a directory, not a config file"),
            (try config("utf16.yaml", [0xFF, 0xFE, 0x6E, 0x00, 0x3A, 0x00]), "utf16.yaml: not UTF-8 text"),
            (try config("binary.yaml", [0x7F, 0x45, 0x4C, 0x46, 0x00, 0x01]), "binary.yaml: not UTF-8 text"),
            (try config("dup.yaml", Array("name: a\nname: b\nmodel: [flatten]\n".utf8)), "dup.yaml: a mapping repeats the key(s) 'name'"),
        ]
        for (path, expected) in cases {
            XCTAssertThrowsError(try TrainingConfig.load(path: path)) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(error)")
                XCTAssertLessThan("\(error)".count, 300)
            }
        }
    }

    func testAGlobalBatchLargerThanTheDataIsAnError() throws {
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml", overrides: ["train.global_batch=241"])
        XCTAssertThrowsError(try Trainer(config: config, communicator: SingleProcessCommunicator(), data: makeData(),
                                         console: Console(isEnabled: false))) {
            XCTAssertTrue("\($0)".contains("'train.global_batch' (241) is larger than the training set (240 samples)"), "\($0)")
        }
    }

    func testARunDirectoryUnderAFileNamesTheFile() throws {
        let file = tempDir() + "/plain"
        FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        XCTAssertThrowsError(try RunDirectory(path: file + "/run", isEnabled: true, resolvedConfig: "")) {
            XCTAssertEqual("\($0)", "\(file)/run: cannot create the run directory: \(file) is a file")
        }
    }

    func testComplexKeysAreRefusedBeforeYAMLCanCompareThemForMinutes() throws {
        // Found by fuzz/run: Yams sorts repeated complex keys by recursive comparison, which took
        // minutes on this 1.3 kB input; the config reader now refuses such keys before composing.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let slow = try String(contentsOf: root.appendingPathComponent("fuzz/corpus/config/regression-complex-keys-slow"), encoding: .utf8)
        let start = Date()
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: slow, file: "slow.yaml"))
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
        for (text, expected) in [("? [a]\n", "slow.yaml:1: an explicit '?' key"), ("[a, b]: 1\n", "a list or mapping used as a key"),
                                 ("x: {[a]: 1}\n", "a list or mapping used as a key"), ("a: &x [1]\n*x : 2\n", "slow.yaml:2: an alias used as a key"),
                                 ("a: " + String(repeating: "[", count: 70) + "\n", "nested more than 64 deep")] {
            XCTAssertThrowsError(try TrainingConfig.parse(yaml: text, file: "slow.yaml")) {
                XCTAssertTrue("\($0)".contains(expected), "\($0)")
            }
        }
        // Question marks, aliases as values and brackets inside quotes are fine.
        let fine = "name: 'what? [a]: b'\ndata: {classes: 4}\nmodel: &m [flatten, {dense: {out: 4}}]  # why? [x]: y\n"
        XCTAssertEqual(try TrainingConfig.parse(yaml: fine, file: "ok.yaml").name, "what? [a]: b")
    }
}
