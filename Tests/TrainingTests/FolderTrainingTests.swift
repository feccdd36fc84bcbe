// Training from an image folder (data.format: folder): a class-per-folder tree of PNG and JPEG
// files of mixed sizes is read, resized and centre-cropped, and trains with random resized crops;
// in exact mode 1 and 3 ranks give the same bits; a class count that does not match the folders is one line.
import Collectives
import Configuration
import Foundation
import TestSupport
@testable import Training
import TrainingTestSupport
import XCTest

final class FolderTrainingTests: XCTestCase {
    /// Two classes told apart by brightness (dark / bright, with per-file noise), sizes 10×12 and
    /// 12×10, half PNG and half JPEG; 24 training and 8 test images per class.
    func writeFolder() -> String {
        let root = makeTempDir("lockstep-folder-train")
        for (split, count) in [("train", 24), ("test", 8)] {
            for (label, name) in ["dark", "light"].enumerated() {
                let dir = "\(root)/\(split)/\(name)"
                try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                for i in 0..<count {
                    let (w, h) = i % 2 == 0 ? (10, 12) : (12, 10)
                    let base = label == 0 ? 60 : 190
                    let pixels = (0..<(w * h * 3)).map { UInt8(base + Int(truncatingIfNeeded: ($0 &* 7919 &+ i &* 104_729) % 41) - 20) }
                    if i % 2 == 0 { writePNG("\(dir)/\(i).png", width: w, height: h, channels: 3, pixels: pixels) }
                    else { writeJPEG("\(dir)/\(i).jpg", width: w, height: h, channels: 3, pixels: pixels) }
                }
            }
        }
        return root
    }

    func config(_ root: String, _ extra: [String] = []) throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: """
            name: folder
            data:
              {format: folder, path: \(root), classes: 2, channels: 3, image_size: 8, resize: 10,
               augment: {horizontal_flip: true, random_resized_crop: {scale: [0.5, 1]}}}
            model:
              - conv: {out: 4, kernel: 3, padding: 1}
              - batchnorm: {}
              - relu
              - global_avgpool
              - dense: {out: 2}
            optimizer: {name: adam, lr: 0.05}
            train: {epochs: 4, global_batch: 12, seed: 2, log_every: 0, exact: true, chunk: 4}
            """, file: "folder.yaml", overrides: extra)
    }

    func testAFolderTrainsWithTheSameBitsOnOneAndThreeRanks() throws {
        let root = writeFolder()
        let cfg = try config(root)
        let data = try TrainingData.load(cfg)
        XCTAssertEqual(data.train.count, 48)
        XCTAssertEqual(data.test.count, 16)
        XCTAssertEqual(data.train.sampleShape, [3, 8, 8])
        XCTAssertEqual(Array(data.train.labels.prefix(24)), [Int32](repeating: 0, count: 24), "dark first: classes in sorted order")
        XCTAssertEqual(data.classNames, ["dark", "light"])
        let named = try ThreadCommunicator.run(size: 1) { comm in
            try Trainer(config: cfg, communicator: comm, data: data, console: Console(isEnabled: false)).config.data.resolvedClassNames
        }[0]
        XCTAssertEqual(named, ["dark", "light"], "checkpoints name the classes by their folders")
        var bits: [[UInt32]] = []
        var accuracy = 0.0
        for ranks in [1, 3] {
            let result = try ThreadCommunicator.run(size: ranks) { comm -> ([UInt32], Double) in
                let trainer = try Trainer(config: cfg, communicator: comm, data: data, console: Console(isEnabled: false))
                let history = try trainer.run()
                return (stateBits(trainer), history.last?.testAccuracy ?? 0)
            }[0]
            bits.append(result.0)
            accuracy = result.1
        }
        XCTAssertEqual(bits[0], bits[1], "exact mode: 1 and 3 ranks train the same bits from image folders")
        XCTAssertGreaterThanOrEqual(accuracy, 0.9, "brightness separates the classes")
    }

    /// data.stream reads each image when it is used: the same samples and the same trained bits
    /// as the in-memory split, and a file damaged after start-up is one error naming it.
    func testStreamedFoldersGiveTheInMemoryBits() throws {
        let root = writeFolder()
        let memory = try TrainingData.load(try config(root))
        let streamed = try TrainingData.load(try config(root, ["data.stream=true"]))
        XCTAssertLessThan(streamed.train.storageBytes, memory.train.storageBytes / 2, "paths, not pixels (these 10×10 images are tiny; real ones are far larger than a path)")
        XCTAssertEqual(streamed.train.mean, memory.train.mean)
        XCTAssertEqual(streamed.train.std, memory.train.std)
        XCTAssertEqual(streamed.test.normalizedImages, memory.test.normalizedImages)
        func train(_ data: TrainingData, ranks: Int) throws -> [UInt32] {
            try ThreadCommunicator.run(size: ranks) { comm -> [UInt32] in
                let trainer = try Trainer(config: try self.config(root), communicator: comm, data: data, console: Console(isEnabled: false))
                try trainer.run()
                return stateBits(trainer)
            }[0]
        }
        XCTAssertEqual(try train(streamed, ranks: 2), try train(memory, ranks: 1), "streamed on 2 ranks = in memory on 1")
        // Damage a file after start-up: the step that reads it fails, naming it.
        let victim = "\(root)/train/dark/0.png"
        XCTAssertTrue(FileManager.default.createFile(atPath: victim, contents: Data("no longer a picture".utf8)))
        XCTAssertThrowsError(try train(streamed, ranks: 1)) { error in
            XCTAssertTrue("\(error)".contains("\(victim): not a readable PNG"), "\(error)")
        }
    }

    func testAClassCountThatDoesNotMatchTheFoldersIsOneLine() throws {
        let root = writeFolder()
        XCTAssertThrowsError(try TrainingData.load(try config(root, ["data.classes=3"]))) { error in
            XCTAssertEqual("\(error)", "\(root)/train: 2 class folders (dark, light) but data.classes is 3; set data.classes: 2")
        }
        XCTAssertThrowsError(try config(root, ["data.channels=2"])) { error in
            XCTAssertTrue("\(error)".contains("channels"), "\(error)")
        }
    }
}
