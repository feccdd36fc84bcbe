// Packed shards (lockstep pack, data.format: packed): the same bits as the IDX files and the PNG
// folder they came from, on 1 and 2 ranks and under mpirun; several shards read like one; the
// manifest's statistics and counts; a corrupt or truncated shard named by --verify and by
// training; a packed set never overwritten.
import Collectives
import Configuration
import Datasets
import Foundation
import TestSupport
@testable import Training
import TrainingTestSupport
import XCTest

final class PackedDataTests: XCTestCase {
    let cli = CLI()

    /// The synthetic IDX set (12×12 grey, 4 classes) as a PNG folder: `<split>/c<label>/<index>.png`,
    /// so that file_order: name gives the IDX order.
    func writeFolder(fromIDX dir: String) throws -> String {
        let root = makeTempDir("lockstep-packed-folder")
        for (split, idx) in [("train", "train"), ("test", "t10k")] {
            let images = try readIDX("\(dir)/\(idx)-images-idx3-ubyte", expectedRank: 3)
            let labels = try readIDX("\(dir)/\(idx)-labels-idx1-ubyte", expectedRank: 1)
            let side = images.dimensions[1]
            for (i, label) in labels.bytes.enumerated() {
                let folder = "\(root)/\(split)/c\(label)"
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                writePNG(String(format: "%@/%05d.png", folder, i), width: side, height: side, channels: 1,
                         pixels: Array(images.bytes[(i * side * side)..<((i + 1) * side * side)]))
            }
        }
        return root
    }

    func config(_ extra: [String]) throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: smallCNNConfig(), file: "packed.yaml",
                                 overrides: ["train.exact=true", "train.chunk=4", "train.max_steps=12", "train.epochs=2"] + extra)
    }

    func train(_ cfg: TrainingConfig, ranks: Int) throws -> [UInt32] {
        let data = try TrainingData.load(cfg)
        return try ThreadCommunicator.run(size: ranks) { comm -> [UInt32] in
            let trainer = try Trainer(config: cfg, communicator: comm, data: data, console: Console(isEnabled: false))
            try trainer.run()
            return stateBits(trainer)
        }[0]
    }

    func testIDXFolderAndTheirPackedShardsTrainTheSameBits() throws {
        let idx = try writeIDXDirectory()
        let folder = try writeFolder(fromIDX: idx)
        let idxConfig = try config(["data.path=\(idx)"])
        let folderConfig = try config(["data.format=folder", "data.path=\(folder)", "data.channels=1", "data.image_size=12", "data.file_order=name"])
        let packedIDX = makeTempDir("lockstep-packed") + "/idx", packedFolder = makeTempDir("lockstep-packed") + "/folder"
        // Small shards (100 records) so that a split spans several files.
        _ = try Packer.pack(idxConfig, output: packedIDX, shardBytes: 100 * (144 + 8))
        _ = try Packer.pack(folderConfig, output: packedFolder)
        XCTAssertEqual(try PackManifest.read(packedIDX).splits["train"]?.shards.count, 3, "240 records in shards of 100")
        let reference = try train(idxConfig, ranks: 1)
        XCTAssertEqual(try train(folderConfig, ranks: 1), reference, "PNG is lossless: the folder gives the IDX bits")
        for (name, dir) in [("packed IDX", packedIDX), ("packed folder", packedFolder)] {
            let packed = try config(["data.format=packed", "data.path=\(dir)"])
            XCTAssertEqual(try train(packed, ranks: 1), reference, "\(name), 1 rank")
            XCTAssertEqual(try train(packed, ranks: 2), reference, "\(name), 2 ranks (prefetching)")
        }
        XCTAssertEqual(try train(try config(["data.format=packed", "data.path=\(packedIDX)", "data.prefetch=false"]), ranks: 2), reference,
                       "without prefetch")
        // The same run with another seed differs, so the comparisons above can fail.
        XCTAssertNotEqual(try train(try config(["data.path=\(idx)", "train.seed=4"]), ranks: 1), reference)

        // The folder config's image keys may stay when training from its pack (checked against
        // the manifest): the same bits; a key that disagrees is one error naming it.
        let same = try config(["data.format=packed", "data.path=\(packedFolder)", "data.channels=1", "data.image_size=12", "data.resize=0"])
        XCTAssertEqual(try train(same, ranks: 1), reference, "matching image keys")
        let other = try config(["data.format=packed", "data.path=\(packedFolder)", "data.image_size=10"])
        XCTAssertThrowsError(try TrainingData.load(other)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("manifest.json") && text.contains("data.image_size is 10") && text.contains("(12 in the pack)"), text)
        }
    }

    func testPackedSetsTrainTheSameBitsUnderMPI() throws {
        try cli.requireMPI()
        let idx = try writeIDXDirectory()
        let configPath = try cli.writeConfig(smallCNNConfig(dataPath: idx))
        let packed = makeTempDir("lockstep-packed") + "/set"
        let pack = try cli.run([cli.lockstep, "pack", "--config", configPath, packed])
        XCTAssertEqual(pack.status, 0, pack.output)
        XCTAssertTrue(pack.output.contains("train: 240 samples in 1 shard(s); per class:"), pack.output)
        let runs = makeTempDir("lockstep-packed-runs")
        let args = ["train", "--config", configPath] + ["train.max_steps=50", "train.epochs=5", "train.chunk=4"].flatMap { ["--set", $0] }
        let one = try cli.run([cli.lockstep] + args + ["--set", "output.dir=\(runs)/idx"])
        XCTAssertEqual(one.status, 0, one.output)
        let two = try cli.mpirun(2, args + ["--set", "data.format=packed", "--set", "data.path=\(packed)", "--set", "output.dir=\(runs)/packed"])
        XCTAssertEqual(two.status, 0, two.output)
        XCTAssertEqual(try checkpointBits("\(runs)/packed"), try checkpointBits("\(runs)/idx"), "packed on 2 MPI ranks = IDX on 1")
        let verify = try cli.run([cli.lockstep, "pack", "--verify", packed])
        XCTAssertEqual(verify.status, 0, verify.output)
        XCTAssertTrue(verify.output.contains("2 shard(s), 300 records, all checksums match"), verify.output)
    }

    func testTheManifestHoldsCountsAndStatisticsAndIsNeverOverwritten() throws {
        let idx = try writeIDXDirectory()
        let cfg = try config(["data.path=\(idx)"])
        let out = makeTempDir("lockstep-packed") + "/set"
        let summary = try Packer.pack(cfg, output: out)
        let data = try TrainingData.load(cfg)
        let m = summary.manifest
        XCTAssertEqual(m.splits["train"]?.classCounts, (0..<4).map { c in data.train.labels.filter { $0 == c }.count })
        XCTAssertEqual(m.splits["test"]?.count, 60)
        // One channel: its statistics are the whole set's, summed in another order (Int per
        // record, then Double), so equal to well within Float's 6e-8 relative step.
        XCTAssertEqual(m.channelMean[0], Double(data.train.mean!), accuracy: 1e-6)
        XCTAssertEqual(m.channelStd[0], Double(data.train.std!), accuracy: 1e-6)
        let packed = try TrainingData.load(try config(["data.format=packed", "data.path=\(out)"]))
        XCTAssertEqual(packed.train.mean, data.train.mean, "training takes the manifest's statistics, not a pass over the data")
        XCTAssertEqual(packed.test.normalizedImages, data.test.normalizedImages)
        let before = try Data(contentsOf: URL(fileURLWithPath: PackManifest.path(out)))
        XCTAssertThrowsError(try Packer.pack(cfg, output: out)) { error in
            XCTAssertEqual("\(error)", "\(out): already holds a packed set (manifest.json); pack into a new directory")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: PackManifest.path(out))), before)
        XCTAssertThrowsError(try TrainingData.load(try config(["data.format=packed", "data.path=\(out)", "data.classes=5"]))) { error in
            XCTAssertEqual("\(error)", "\(PackManifest.path(out)): the packed set has 4 classes but data.classes is 5; set data.classes: 4")
        }
    }

    func testACorruptShardIsNamedByVerifyAndByTraining() throws {
        let idx = try writeIDXDirectory()
        let out = makeTempDir("lockstep-packed") + "/set"
        _ = try Packer.pack(try config(["data.path=\(idx)"]), output: out)
        XCTAssertEqual(try PackedSplit.verify(out), [])
        let shard = "\(out)/train-00000.lsp"
        // Flip one bit of record 7's pixels.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: shard))
        bytes[PackManifest.headerBytes + 7 * 144 + 5] ^= 1
        try bytes.write(to: URL(fileURLWithPath: shard))
        let problems = try PackedSplit.verify(out)
        XCTAssertEqual(problems.count, 2, "\(problems)")
        XCTAssertEqual(problems.first, "\(shard): 1 record(s) fail their checksums, the first is record 7 (sample 7)")
        XCTAssertTrue(problems.last?.hasPrefix("\(shard): CRC-32 ") ?? false, "\(problems)")
        let packed = try config(["data.format=packed", "data.path=\(out)"])
        XCTAssertThrowsError(try train(packed, ranks: 2)) { error in
            XCTAssertEqual("\(error)", "\(shard): record 7 (sample 7) fails its checksum: the shard is corrupt (run lockstep pack --verify)")
        }
        // Cut short: opening the set names the shard before any step.
        try bytes.prefix(1000).write(to: URL(fileURLWithPath: shard))
        XCTAssertThrowsError(try TrainingData.load(packed)) { error in
            XCTAssertEqual("\(error)", "\(shard): 1000 bytes, the manifest says \(bytes.count) (truncated or replaced; run lockstep pack --verify)")
        }
        XCTAssertEqual(try PackedSplit.verify(out), ["\(shard): 1000 bytes, the manifest says \(bytes.count) (truncated or replaced)"])
        try "{\"format\": \"lockstep-packed\"}".write(toFile: PackManifest.path(out), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrainingData.load(packed)) { error in
            XCTAssertEqual("\(error)", "\(PackManifest.path(out)): not a packed-data manifest (missing key 'version')")
        }
    }

    /// Mixed-size JPEG and PNG images, resized and packed as their stored squares: random
    /// resized crops from the shards match the folder's, on 1 and 3 ranks.
    func testJPEGFoldersPackWithTheirCropsAndTrainTheSameBits() throws {
        let root = makeTempDir("lockstep-packed-jpeg")
        for (split, count) in [("train", 18), ("test", 6)] {
            for (label, name) in ["dark", "light"].enumerated() {
                let dir = "\(root)/\(split)/\(name)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                for i in 0..<count {
                    let (w, h) = [(10, 14), (16, 9), (12, 12)][i % 3]
                    let pixels = (0..<(w * h * 3)).map { UInt8((label == 0 ? 50 : 180) + ($0 &* 31 &+ i &* 17) % 50) }
                    if i % 2 == 0 { writeJPEG("\(dir)/\(i).jpg", width: w, height: h, channels: 3, pixels: pixels) }
                    else { writePNG("\(dir)/\(i).png", width: w, height: h, channels: 3, pixels: pixels) }
                }
            }
        }
        let folder = try TrainingConfig.parse(yaml: """
            name: jpeg
            data:
              {format: folder, path: \(root), classes: 2, channels: 3, image_size: 8, resize: 10,
               augment: {horizontal_flip: true, random_resized_crop: {scale: [0.5, 1]}}}
            model: [{conv: {out: 4, kernel: 3, padding: 1}}, {batchnorm: {}}, relu, global_avgpool, {dense: {out: 2}}]
            optimizer: {name: adam, lr: 0.05}
            train: {epochs: 3, global_batch: 12, seed: 2, log_every: 0, chunk: 4}
            """, file: "jpeg.yaml")
        let out = makeTempDir("lockstep-packed") + "/jpeg"
        let m = try Packer.pack(folder, output: out).manifest
        XCTAssertEqual(m.storedShape, [3, 10, 10])
        XCTAssertEqual(m.sampleShape, [3, 8, 8])
        XCTAssertEqual(m.classNames, ["dark", "light"])
        var packed = folder
        packed.data.format = .packed
        packed.data.path = out
        let reference = try train(folder, ranks: 1)
        XCTAssertEqual(try train(packed, ranks: 1), reference)
        XCTAssertEqual(try train(packed, ranks: 3), reference)
    }
}
