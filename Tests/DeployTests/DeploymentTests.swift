// What a trained model carries out of the trainer: self-describing checkpoint metadata (input
// shape, preprocessing, class names) and the test split's logits in sample order.
import Configuration
import Datasets
import Formats
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class DeploymentTests: XCTestCase {
    let cli = CLI()

    func testNormalizationMetadataRoundTrips() {
        for n in [InputNormalization.none, .pixels(mean: 0.286, std: 0.353), .features(mean: [1.5, -2, 1e-9], std: [1, 0.25, 3])] {
            XCTAssertEqual(InputNormalization(metadata: n.metadata), n)
        }
        XCTAssertNil(InputNormalization(metadata: [:]), "an old checkpoint without it")
        XCTAssertNil(InputNormalization(metadata: ["normalization": "pixels", "normalize_mean": "x", "normalize_std": "1"]))
    }

    func testClassNamesAreValidated() throws {
        let base = "model:\n  - flatten\n  - dense: {out: 3}\ndata:\n  classes: 3\n"
        XCTAssertEqual(try TrainingConfig.parse(yaml: base, file: "c.yaml").data.resolvedClassNames, ["0", "1", "2"])
        XCTAssertEqual(try TrainingConfig.parse(yaml: base + "  class_names: [cat, dog, 'T-shirt/top']\n", file: "c.yaml").data.classNames,
                       ["cat", "dog", "T-shirt/top"])
        for (extra, part) in [("  class_names: [a, b]\n", "2 names for 3 classes"), ("  class_names: [a, b, a]\n", "repeats")] {
            XCTAssertThrowsError(try TrainingConfig.parse(yaml: base + extra, file: "c.yaml")) {
                XCTAssertTrue("\($0)".contains("data.class_names") && "\($0)".contains(part), "\($0)")
            }
        }
    }

    /// Reads a 2-D float32 .npy written by ArrayFile (format 1.0, little-endian).
    func readNPY(_ path: String) throws -> (shape: [Int], values: [Float]) {
        let b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(b.prefix(8)), [0x93] + Array("NUMPY".utf8) + [1, 0])
        let n = Int(b[8]) | Int(b[9]) << 8
        let header = String(decoding: b[10..<(10 + n)], as: UTF8.self)
        XCTAssertEqual((10 + n) % 64, 0, "data starts 64-byte aligned")
        XCTAssertTrue(header.contains("'descr': '<f4'") && header.hasSuffix("\n"), header)
        let dims = header.components(separatedBy: "(")[1].components(separatedBy: ")")[0]
        let shape = dims.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let values = stride(from: 10 + n, to: b.count, by: 4).map { i in
            Float(bitPattern: UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24)
        }
        return (shape, values)
    }

    func testCheckpointDescribesItselfAndEvalWritesLogitsInSampleOrder() throws {
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let data = try writeIDXDirectory(), dir = makeTempDir()
        let config = try cli.writeConfig(smallCNNConfig(dataPath: data, extra: "").replacingOccurrences(
            of: "  classes: 4\n", with: "  classes: 4\n  class_names: [north-west, north-east, south-west, south-east]\n"))
        let train = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)", "--set", "train.exact=true",
                                 "--set", "train.chunk=4"])
        XCTAssertEqual(train.status, 0, train.output)
        let checkpoint = "\(dir)/best.safetensors"
        let meta = try SafeTensorsFile.read(path: checkpoint).metadata
        XCTAssertEqual(meta["input_shape"], "1,12,12")
        XCTAssertEqual(meta["class_names"], "[\"north-west\",\"north-east\",\"south-west\",\"south-east\"]")
        XCTAssertEqual(meta["data_format"], "idx")
        guard case .pixels(let mean, let std)? = InputNormalization(metadata: meta) else { return XCTFail("\(meta)") }
        XCTAssertTrue(mean > 0 && mean < 1 && std > 0 && std < 1, "statistics of [0, 1] pixels: \(mean), \(std)")

        let one = try cli.run([cli.lockstep, "eval", "--checkpoint", checkpoint, "--logits", "\(dir)/one.npy"])
        XCTAssertEqual(one.status, 0, one.output)
        let three = try cli.run([cli.lockstep, "eval", "--checkpoint", checkpoint, "--logits", "\(dir)/three.npy",
                                 "--simulate-ranks", "3", "--set", "data.eval_batch=7"])
        XCTAssertEqual(three.status, 0, three.output)
        let a = try readNPY("\(dir)/one.npy"), b = try readNPY("\(dir)/three.npy")
        XCTAssertEqual(a.shape, [60, 4])
        XCTAssertEqual(a.values.map { $0.bitPattern }, b.values.map { $0.bitPattern }, "exact mode: the same logits on 3 ranks")
        // The logits agree with the printed mean test loss: recompute it from the file in Double.
        let labels = (0..<60).map { $0 % 4 }
        var total = 0.0
        for i in 0..<60 {
            let row = a.values[(4 * i)..<(4 * i + 4)].map(Double.init)
            let m = row.max()!
            total += m + log(row.map { exp($0 - m) }.reduce(0, +)) - row[labels[i]]
        }
        let printed = try XCTUnwrap(one.output.split(separator: "\n").first { $0.hasPrefix("test loss") }?
            .split(separator: " ").dropFirst(2).first.flatMap { Double($0) })
        XCTAssertEqual(total / 60, printed, accuracy: 5e-5, "the printed loss has 4 decimals")
        // A checkpoint from before the deployment metadata: export and predict say what is missing.
        var old = try SafeTensorsFile.read(path: checkpoint)
        for key in ["input_shape", "normalization", "normalize_mean", "normalize_std", "architecture"] { old.metadata[key] = nil }
        try writeAtomically(try old.encoded(updatingMetadata: [:]), to: "\(dir)/old.safetensors")
        for args in [["export", "--checkpoint", "\(dir)/old.safetensors", "--onnx", "\(dir)/old.onnx"],
                     ["predict", "--checkpoint", "\(dir)/old.safetensors", "\(data)/t10k-images-idx3-ubyte"]] {
            let r = try cli.run([cli.lockstep] + args)
            XCTAssertNotEqual(r.status, 0, r.output)
            XCTAssertTrue(r.output.contains("\(dir)/old.safetensors") && r.output.contains("does not describe its input"), r.output)
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/old.onnx"), "nothing written on an error")
        }
        let bad = try cli.run([cli.lockstep, "eval", "--checkpoint", checkpoint, "--logits", "\(dir)/x.csv"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains(".npy or .safetensors"), bad.output)
    }
}
