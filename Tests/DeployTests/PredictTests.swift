// `lockstep predict`: PNG files made from test images by tools/make_test_pngs.py get the classes
// that `eval --logits` gives those images; IDX files, PGM, JPEG, images of another size (scaled
// as evaluation samples were) and CSV rows too, on any number of ranks; bad inputs get
// one-line errors naming the file.
import Formats
import Foundation
import Reports
import TestSupport
@testable import Training
import TrainingTestSupport
import XCTest

final class PredictTests: XCTestCase {
    let cli = CLI()

    func trained() throws -> (data: String, dir: String) {
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let data = try writeIDXDirectory(), dir = makeTempDir("lockstep-predict")
        let config = try cli.writeConfig(smallCNNConfig(dataPath: data))
        let train = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)", "--set", "train.epochs=3",
                                 "--set", "train.max_steps=0"])
        XCTAssertEqual(train.status, 0, train.output)
        return (data, dir)
    }

    /// The class names predict prints first, one per input line.
    func firstClasses(_ output: String) -> [Int] {
        output.split(separator: "\n").compactMap { line in
            line.range(of: ": ").flatMap { Int(line[$0.upperBound...].split(separator: " ").first ?? "") }
        }
    }

    func testPredictAgreesWithEvalOnPNGIDXAndPGM() throws {
        let (data, dir) = try trained()
        let checkpoint = "\(dir)/best.safetensors"
        let pngs = try cli.run(["python3", repositoryRoot.appendingPathComponent("tools/make_test_pngs.py").path,
                                "--data", data, "--count", "10", "\(dir)/png"])
        XCTAssertEqual(pngs.status, 0, pngs.output)
        let eval = try cli.run([cli.lockstep, "eval", "--checkpoint", checkpoint, "--logits", "\(dir)/logits.safetensors"])
        XCTAssertEqual(eval.status, 0, eval.output)
        let file = try SafeTensorsFile.read(path: "\(dir)/logits.safetensors")
        let logits = file.values(try XCTUnwrap(file.entry("logits")))
        let expected = (0..<60).map { i in (0..<4).max { logits[4 * i + $0] < logits[4 * i + $1] }! }

        let files = (0..<10).map { String(format: "\(dir)/png/test-%05d.png", $0) }
        let png = try cli.run([cli.lockstep, "predict", "--checkpoint", checkpoint, "--top", "2"] + files)
        XCTAssertEqual(png.status, 0, png.output)
        XCTAssertEqual(firstClasses(png.output), Array(expected.prefix(10)), png.output)
        XCTAssertTrue(png.output.contains("test-00009.png: "), png.output)

        let idx = try cli.run([cli.lockstep, "predict", "--checkpoint", checkpoint, "--simulate-ranks", "3", "\(data)/t10k-images-idx3-ubyte"])
        XCTAssertEqual(idx.status, 0, idx.output)
        XCTAssertEqual(firstClasses(idx.output), expected, "all 60 test images, in order, over 3 ranks")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/mpirun") {
            let mpi = try cli.mpirun(2, ["predict", "--checkpoint", checkpoint, "--top", "1", "\(data)/t10k-images-idx3-ubyte"])
            XCTAssertEqual(mpi.status, 0, mpi.output)
            XCTAssertEqual(firstClasses(mpi.output), expected, "under mpirun: rank 0 prints every input in order")
        }

        // Image 0 scaled 2× (each pixel a 2 × 2 block), as PNG and as RGB JPEG: predict scales an
        // image of another size as evaluation samples were cut (shorter side to the stored
        // 12, centre square). Bilinear halving of 2 × 2 blocks reads each block's two equal
        // pixels at weight ½, so the PNG gives image 0's pixels exactly: the same printed line.
        let zero = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(data)/t10k-images-idx3-ubyte")))[16..<(16 + 144)].map { $0 }
        let double = (0..<24).flatMap { y in (0..<24).map { x in zero[(y / 2) * 12 + x / 2] } }
        writePNG("\(dir)/double.png", width: 24, height: 24, channels: 1, pixels: double)
        writeJPEG("\(dir)/double.jpg", width: 24, height: 24, channels: 3, pixels: double.flatMap { [$0, $0, $0] })
        let scaled = try cli.run([cli.lockstep, "predict", "--checkpoint", checkpoint, "--top", "2", files[0], "\(dir)/double.png", "\(dir)/double.jpg"])
        XCTAssertEqual(scaled.status, 0, scaled.output)
        let lines = scaled.output.split(separator: "\n").filter { $0.contains(": ") }
        XCTAssertEqual(lines.count, 3, scaled.output)
        XCTAssertEqual(lines[1].split(separator: ":").dropFirst().joined(), lines[0].split(separator: ":").dropFirst().joined(),
                       "the 2× PNG is image 0 after the scaling, bit for bit: \(scaled.output)")
        XCTAssertTrue(lines[2].contains("double.jpg: "), "a JPEG (lossy, so only read) is classified: \(scaled.output)")

        // Image 0 as a binary PGM.
        let pixels = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(data)/t10k-images-idx3-ubyte")))[16..<(16 + 144)]
        try Data(Array("P5\n# test\n12 12\n255\n".utf8) + pixels).write(to: URL(fileURLWithPath: "\(dir)/zero.pgm"))
        let pgm = try cli.run([cli.lockstep, "predict", "--checkpoint", checkpoint, "--json", "\(dir)/zero.pgm"])
        XCTAssertEqual(pgm.status, 0, pgm.output)
        let object = try JSONSerialization.jsonObject(with: Data(pgm.output.split(separator: "\n").last!.utf8)) as? [String: Any]
        let top = try XCTUnwrap((object?["top"] as? [[String: Any]])?.first)
        XCTAssertEqual(top["index"] as? Int, expected[0])
        let probabilities = try XCTUnwrap(object?["top"] as? [[String: Any]]).compactMap { $0["probability"] as? Double }
        XCTAssertEqual(probabilities.count, 3)
        XCTAssertEqual(probabilities, probabilities.sorted(by: >), "most probable first")
    }

    func testBadInputsGetOneLineErrors() throws {
        let (_, dir) = try trained()
        let checkpoint = "\(dir)/best.safetensors"
        // A truncated PNG, and a PNG of the wrong size (Lockstep's own PNG writer, 20×10).
        var good = Raster(width: 12, height: 12, background: .white)
        good.set(3, 3, .black)
        let bytes = try good.png()
        try Data(bytes.prefix(bytes.count - 20)).write(to: URL(fileURLWithPath: "\(dir)/cut.png"))
        try Data(try Raster(width: 20, height: 10, background: .white).png()).write(to: URL(fileURLWithPath: "\(dir)/wide.png"))
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: "\(dir)/text.png"))
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/good.png"))
        try Data("not a jpeg".utf8).write(to: URL(fileURLWithPath: "\(dir)/text.jpg"))
        for (file, part) in [("cut.png", "corrupt PNG"), ("text.png", "not a readable PNG"), ("text.jpg", "not a readable JPEG"),
                             ("rows.csv", "not a vector of features"), ("x.gif", "unknown input type")] {
            if file.hasSuffix(".csv") { try "a,b\n1,2\n".write(toFile: "\(dir)/\(file)", atomically: true, encoding: .utf8) }
            let r = try cli.run([cli.lockstep, "predict", "--checkpoint", checkpoint, "\(dir)/good.png", "\(dir)/\(file)"])
            XCTAssertNotEqual(r.status, 0, file)
            let errors = r.output.split(separator: "\n").filter { $0.contains("error") || $0.contains(file) }
            XCTAssertEqual(errors.count, 1, "one line: \(r.output)")
            XCTAssertTrue(r.output.contains("\(dir)/\(file)") && r.output.contains(part), r.output)
        }
        let good1 = try cli.run([cli.lockstep, "predict", "--checkpoint", checkpoint, "\(dir)/good.png", "\(dir)/wide.png"])
        XCTAssertEqual(good1.status, 0, "an RGB PNG is converted to grey for a grey model, and a 20×10 one scaled and cut: \(good1.output)")
    }

    func testCSVRowsOfTheWrongWidth() throws {
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let tables = try writeTabularTables(), dir = makeTempDir("lockstep-predict-csv")
        let config = try cli.writeConfig(tabularConfig(tables, labels: "label_column: label"))
        let train = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)"])
        XCTAssertEqual(train.status, 0, train.output)
        let ok = try cli.run([cli.lockstep, "predict", "--checkpoint", "\(dir)/best.safetensors", "\(tables)/test.csv"])
        XCTAssertEqual(ok.status, 0, ok.output)
        XCTAssertEqual(ok.output.split(separator: "\n").filter { $0.contains("test.csv:") }.count, 32, "one line per row, header skipped")
        try "x,y,z,is0,is1\n1,2,3,0,1\n1,2,3\n".write(toFile: "\(dir)/bad.csv", atomically: true, encoding: .utf8)
        let bad = try cli.run([cli.lockstep, "predict", "--checkpoint", "\(dir)/best.safetensors", "\(dir)/bad.csv"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("\(dir)/bad.csv:3: 3 features, the model expects 5"), bad.output)
    }
}
