// Checkpoints: exact resume, resume on another world size, and bad files.
import Collectives
import Configuration
import Formats
import Foundation
import NN
@testable import Training
import TrainingTestSupport
import XCTest

final class CheckpointTests: XCTestCase {
    func tempDir() -> String { makeTempDir("lockstep-ckpt") }
    /// Rank 0's checkpoints of the last `train` whose state the update wrote into the image.
    var filledByUpdate = 0

    /// 2 epochs of 10 steps; checkpoints every 3 steps.
    func config(_ extra: [String] = []) throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml",
                                 overrides: ["train.max_steps=0", "train.epochs=2", "checkpoint.every_steps=3"] + extra)
    }

    /// Trains on `ranks` thread ranks; optionally resumes from `resume`, optionally stops after
    /// `stopAt` (as on SIGTERM). Returns rank 0's parameters and optimizer state.
    func train(ranks: Int, dir: String, resume: String? = nil, stopAt: Int? = nil, data: TrainingData,
               overrides: [String] = []) throws -> [Float] {
        let cfg = try config(overrides)
        let results = try ThreadCommunicator.run(size: ranks) { comm -> ([Float], Int) in
            let trainer = try Trainer(config: cfg, communicator: comm, data: data, console: Console(isEnabled: false))
            if let resume { try trainer.restore(from: resume) }
            trainer.stopAtStep = stopAt
            let run = try RunDirectory(path: dir, isEnabled: comm.rank == 0, resolvedConfig: cfg.resolvedYAML,
                                       start: resume == nil ? .fresh : .resume)
            do { try trainer.run(directory: run) } catch is Preempted {}
            return (Array(trainer.model.parameters.flatValues) + trainer.optimizer.state.flatMap { Array($0.values) },
                    trainer.checkpointsFilledByUpdate)
        }
        filledByUpdate = results[0].1
        return results[0].0
    }

    func testResumeMidEpochIsBitwiseExact() throws {
        let data = makeData()
        let full = try train(ranks: 2, dir: tempDir(), data: data)
        let dir = tempDir()
        _ = try train(ranks: 2, dir: dir, stopAt: 7, data: data)   // mid-epoch 0 (10 steps per epoch)
        let ckpt = try XCTUnwrap(Checkpointer.newest(in: dir))
        XCTAssertTrue(ckpt.hasSuffix("ckpt-step00000007.safetensors"), ckpt)
        let resumed = try train(ranks: 2, dir: dir, resume: ckpt, data: data)
        XCTAssertEqual(resumed, full, "resumed run must equal the uninterrupted one bit for bit")
    }

    func testResumeFromPeriodicCheckpointAfterAKill() throws {
        // A run that dies without a final save: only the periodic checkpoint of step 6 remains.
        let data = makeData()
        let full = try train(ranks: 1, dir: tempDir(), data: data)
        let dir = tempDir()
        _ = try train(ranks: 1, dir: dir, stopAt: 8, data: data)
        let six = dir + "/" + Checkpointer.fileName(step: 6)
        XCTAssertTrue(FileManager.default.fileExists(atPath: six))
        let resumed = try train(ranks: 1, dir: tempDir(), resume: six, data: data)
        XCTAssertEqual(resumed, full)
    }

    func testCheckpointsFilledByTheUpdateResumeBitwise() throws {
        // With every optimizer, a periodic checkpoint's parameters and optimizer state are streamed
        // into its image by the update of the step before it (CheckpointCadence.prepareCheckpointImage),
        // so the file is only right if that image is exactly the state: resume from it on another
        // world size. SGD with momentum has one state tensor, plain SGD none, centered RMSProp
        // with momentum three, AdaGrad one.
        let data = makeData()
        for optimizer in [["optimizer.name=adam", "optimizer.lr=0.003"], [], ["optimizer.momentum=0"],
                          ["optimizer.name=rmsprop", "optimizer.lr=0.001", "optimizer.centered=true"],
                          ["optimizer.name=adagrad", "optimizer.lr=0.01", "optimizer.momentum=0"]] {
            let full = try train(ranks: 2, dir: tempDir(), data: data, overrides: optimizer)
            let dir = tempDir()
            _ = try train(ranks: 2, dir: dir, stopAt: 8, data: data, overrides: optimizer)
            XCTAssertEqual(filledByUpdate, 2, "\(optimizer): steps 3 and 6 (the stop's checkpoint at step 8 is copied)")
            let six = dir + "/" + Checkpointer.fileName(step: 6)
            let header = try XCTUnwrap(FileHandle(forReadingAtPath: six)).readData(ofLength: 8)
            let length = header.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) } + 8
            XCTAssertEqual(length % 4096, 0, "the header fills whole pages, so the values start page-aligned")
            XCTAssertEqual(try train(ranks: 1, dir: tempDir(), resume: six, data: data, overrides: optimizer), full, "\(optimizer)")
        }
    }

    func testResumeOnAnotherWorldSizeIsBitwiseExactInExactMode() throws {
        let data = makeData()
        let exact = ["train.exact=true", "train.chunk=4"]
        let full = try train(ranks: 2, dir: tempDir(), data: data, overrides: exact)
        let dir = tempDir()
        _ = try train(ranks: 2, dir: dir, stopAt: 5, data: data, overrides: exact)
        let ckpt = try XCTUnwrap(Checkpointer.newest(in: dir))
        for ranks in [1, 3, 4] {
            let resumed = try train(ranks: ranks, dir: tempDir(), resume: ckpt, data: data, overrides: exact)
            XCTAssertEqual(resumed.map(\.bitPattern), full.map(\.bitPattern), "resumed on \(ranks) ranks")
        }
    }

    func testKeepsTheLastKAndBest() throws {
        let data = makeData()
        let dir = tempDir()
        _ = try train(ranks: 1, dir: dir, data: data)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        let ckpts = files.filter { $0.hasPrefix("ckpt-step") }.sorted()
        XCTAssertEqual(ckpts, ["ckpt-step00000015.safetensors", "ckpt-step00000018.safetensors", "ckpt-step00000020.safetensors"])
        XCTAssertTrue(files.contains("best.safetensors"))
        XCTAssertTrue(files.contains("config.yaml"))
        XCTAssertTrue(files.contains { $0.hasPrefix("events.out.tfevents.") })
        let lines = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let epochs = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }.filter { $0["kind"] as? String == "epoch" }
        XCTAssertEqual(epochs.count, 2)
        XCTAssertNotNil(epochs.last?["test_accuracy"] as? Double)
    }

    func testBadCheckpointsGiveClearErrors() throws {
        let data = makeData()
        let dir = tempDir()
        _ = try train(ranks: 1, dir: dir, stopAt: 3, data: data)
        let good = try XCTUnwrap(Checkpointer.newest(in: dir))
        let bytes = [UInt8](FileManager.default.contents(atPath: good)!)
        let cfg = try config()
        func restoreError(_ b: [UInt8], config c: TrainingConfig? = nil) -> String {
            let path = dir + "/bad-\(UUID().uuidString).safetensors"
            XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(b)))
            do {
                let t = try Trainer(config: c ?? cfg, communicator: SingleProcessCommunicator(), data: data, console: Console(isEnabled: false))
                try t.restore(from: path)
                return "no error"
            } catch {
                XCTAssertTrue("\(error)".contains(path), "error should name the file: \(error)")
                return "\(error)"
            }
        }
        XCTAssertTrue(restoreError(Array(bytes.prefix(5))).contains("truncated"))
        XCTAssertTrue(restoreError(Array(bytes.prefix(bytes.count - 100))).contains("truncated"))
        var lying = bytes
        lying[0] = 0xFF; lying[1] = 0xFF; lying[2] = 0xFF
        XCTAssertTrue(restoreError(lying).contains("header length"))
        var garbage = bytes
        for i in 8..<40 { garbage[i] = 0x41 }
        XCTAssertTrue(restoreError(garbage).contains("not a JSON object"))
        // Another architecture: a wider first dense layer.
        let other = try TrainingConfig.parse(yaml: smallCNNConfig().replacingOccurrences(of: "dense: {out: 16}", with: "dense: {out: 32}"),
                                             file: "other.yaml", overrides: ["train.max_steps=0", "train.epochs=2"])
        let message = restoreError(bytes, config: other)
        XCTAssertTrue(message.contains("other shape dense1.weight [16, 144] (model has [32, 144])"), message)
        XCTAssertEqual(restoreError(bytes), "no error")
    }

    func testOffsetsOutsideTheFileAreRejectedBeforeReading() throws {
        let values: [Float] = [1, 2, 3, 4]
        var b = try values.withUnsafeBufferPointer {
            try SafeTensorsFile.encode(tensors: [("t", [4], $0)], metadata: ["k": "v"])
        }
        let parsed = try SafeTensorsFile(bytes: b, path: "x")
        XCTAssertEqual(parsed.values(parsed.entries[0]), values)
        XCTAssertEqual(parsed.metadata["k"], "v")
        // Rewrite the header so the tensor claims 4 floats at offsets beyond the data.
        let n = Int(b[0]) | Int(b[1]) << 8
        var header = String(decoding: b[8..<(8 + n)], as: UTF8.self)
        XCTAssertTrue(header.contains("[0,16]"), header)
        header = header.replacingOccurrences(of: "[0,16]", with: "[1000,1016]")
        let hb = Array(header.utf8)
        b.replaceSubrange(8..<(8 + n), with: hb)
        b[0] = UInt8(hb.count & 0xFF); b[1] = UInt8(hb.count >> 8)
        XCTAssertThrowsError(try SafeTensorsFile(bytes: b, path: "hostile")) { XCTAssertTrue("\($0)".contains("data section"), "\($0)") }
    }

    func testAtomicWriteNeverLeavesPartialFiles() throws {
        let dir = tempDir()
        let path = dir + "/x.safetensors"
        try writeAtomically([1, 2, 3], to: path)
        try writeAtomically(Array(repeating: 7, count: 1000), to: path)
        XCTAssertEqual(FileManager.default.contents(atPath: path)?.count, 1000)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["x.safetensors"], "no temporary files left")
        XCTAssertThrowsError(try writeAtomically([1], to: "/nonexistent-dir/x")) { XCTAssertTrue("\($0)".contains("/nonexistent-dir")) }
    }
}
