// CSV tables and CIFAR-10 binary batches: values and labels read back as written, training-split
// statistics, one-hot labels, and a one-line error naming the file (and line) for bad input.
import Foundation
import XCTest
@testable import Datasets

final class TabularAndCIFARTests: XCTestCase {
    func write(_ text: String, name: String = "t.csv") throws -> String {
        let dir = NSTemporaryDirectory() + "lockstep-csv-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testReadsFeaturesAndLabelsByNameIndexOrOneHot() throws {
        let byName = try CSVReader.read(path: try write("a,label,b\n1,0,2\n3,1,4.5\r\n\n5,2,-6\n"), format: CSVFormat(), classes: 3)
        XCTAssertEqual(byName.featureNames, ["a", "b"])
        XCTAssertEqual(byName.features, [[1, 2], [3, 4.5], [5, -6]])
        XCTAssertEqual(byName.labels, [0, 1, 2])
        var noHeader = CSVFormat()
        noHeader.header = false
        noHeader.labels = .column("1")
        let byIndex = try CSVReader.read(path: try write("1,0,2\n3,1,4.5\n5,2,-6\n"), format: noHeader, classes: 3)
        XCTAssertEqual(byIndex.features, byName.features)
        XCTAssertEqual(byIndex.labels, byName.labels)
        var oneHot = CSVFormat()
        oneHot.labels = .oneHot(["c0", "c1", "c2"])
        let hot = try CSVReader.read(path: try write("a,b,c0,c1,c2\n1,2,1,0,0\n3,4.5,0,1,0\n5,-6,0,0,1\n"), format: oneHot, classes: 3)
        XCTAssertEqual(hot.features, byName.features)
        XCTAssertEqual(hot.labels, byName.labels, "one-hot rows become the class of their 1")
    }

    func testStandardisationUsesTheGivenStatistics() throws {
        let train = CSVTable(featureNames: ["a", "b"], features: [[1, 5], [3, 5]], labels: [0, 1])
        let (mean, std) = CSVReader.statistics(train.features)
        XCTAssertEqual(mean, [2, 5])
        XCTAssertEqual(std, [1, 1], "population std of (1, 3) is 1; a constant column gets 1, not 0")
        let test = CSVTable(featureNames: ["a", "b"], features: [[4, 7]], labels: [1])
        let d = CSVReader.dataset(test, name: "test", classes: 2, mean: mean, std: std)
        XCTAssertEqual(d.sampleShape, [2])
        XCTAssertEqual(d.normalizedImages, [2, 2], "test rows use the training statistics")
    }

    func testBadCSVGetsAnErrorNamingFileLineAndColumn() throws {
        let cases: [(String, CSVFormat, [String])] = [
            ("a,label\n1,0\n2\n", CSVFormat(), [":3:", "1 cells, expected 2", "ragged"]),
            ("a,label\n1,0\nx,1\n", CSVFormat(), [":3:", "'a'", "'x'", "number"]),
            ("a,label\n1,0\n2,\n", CSVFormat(), [":3:", "missing label"]),
            ("a,label\n1,7\n", CSVFormat(), [":2:", "'7'", "0..<3"]),
            ("a,label\n1,nan\n", CSVFormat(), [":2:", "'nan'"]),
            ("a,b\n1,0\n", CSVFormat(), ["no label column 'label'", "a, b"]),
            ("", CSVFormat(), ["empty"]),
            ("a,label\n", CSVFormat(), ["no rows"]),
            ("a,label\ninf,1\n", CSVFormat(), ["'inf'", "finite"]),
        ]
        for (text, format, parts) in cases {
            let path = try write(text)
            XCTAssertThrowsError(try CSVReader.read(path: path, format: format, classes: 3)) { error in
                let m = "\(error)"
                XCTAssertTrue(m.hasPrefix(path), m)
                XCTAssertFalse(m.contains("\n"), "one line: \(m)")
                for p in parts { XCTAssertTrue(m.contains(p), "'\(p)' missing from: \(m)") }
            }
        }
        var oneHot = CSVFormat()
        oneHot.labels = .oneHot(["c0", "c1", "c2"])
        for (row, part) in [("1,1,1,0", "more than one 1"), ("1,0,0,0", "no 1"), ("1,0.5,0,0", "expected 0 or 1")] {
            XCTAssertThrowsError(try CSVReader.read(path: try write("a,c0,c1,c2\n" + row + "\n"), format: oneHot, classes: 3)) {
                XCTAssertTrue("\($0)".contains(part), "\($0)")
            }
        }
        XCTAssertThrowsError(try CSVReader.read(path: try write("a,c0,c1\n1,1,0\n"), format: { var f = CSVFormat(); f.labels = .oneHot(["c0", "c1"]); return f }(), classes: 3)) {
            XCTAssertTrue("\($0)".contains("2 one-hot label columns for 3 classes"), "\($0)")
        }
    }

    /// A directory of CIFAR-10 batches: `count` records per file, record r of file f labelled
    /// (f + r) % 10 with every pixel of channel c equal to (r + 10·c) % 256.
    func cifarDirectory(count: Int, truncate: Int = 0, badLabel: Bool = false) throws -> String {
        let dir = NSTemporaryDirectory() + "lockstep-cifar-\(UUID().uuidString)/cifar-10-batches-bin"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (f, name) in (CIFAR10.trainFiles + CIFAR10.testFiles).enumerated() {
            var bytes = [UInt8]()
            for r in 0..<count {
                bytes.append(badLabel && f == 5 && r == 1 ? 12 : UInt8((f + r) % 10))
                for c in 0..<3 { bytes += [UInt8](repeating: UInt8((r + 10 * c) % 256), count: 1024) }
            }
            if f == 5 { bytes.removeLast(truncate) }
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + name))
        }
        return (dir as NSString).deletingLastPathComponent
    }

    func testCIFARRecordsReadBackInOrder() throws {
        let root = try cifarDirectory(count: 3)
        let train = try CIFAR10.load(path: root, split: "train", classes: 10, mean: 0, std: 1)
        XCTAssertEqual(train.count, 15)
        XCTAssertEqual(train.sampleShape, [3, 32, 32])
        XCTAssertEqual(train.labels, [0, 1, 2, 1, 2, 3, 2, 3, 4, 3, 4, 5, 4, 5, 6])
        let sample4 = Array(train.normalizedImages[(4 * 3072)..<(5 * 3072)])   // file 2, record 1
        for c in 0..<3 {
            XCTAssertEqual(Set(sample4[(c * 1024)..<((c + 1) * 1024)]), [Float(1 + 10 * c) / 255], "channel \(c) is its own plane")
        }
        let test = try CIFAR10.load(path: root, split: "test", classes: 10, mean: nil, std: nil)
        XCTAssertEqual(test.labels, [5, 6, 7])
    }

    func testBadCIFARFilesGetOneLineErrors() throws {
        let truncated = try cifarDirectory(count: 2, truncate: 100)
        XCTAssertThrowsError(try CIFAR10.load(path: truncated, split: "test", classes: 10, mean: 0, std: 1)) {
            XCTAssertTrue("\($0)".contains("test_batch.bin") && "\($0)".contains("not a whole number of 3073-byte"), "\($0)")
        }
        let bad = try cifarDirectory(count: 2, badLabel: true)
        XCTAssertThrowsError(try CIFAR10.load(path: bad, split: "test", classes: 10, mean: 0, std: 1)) {
            XCTAssertTrue("\($0)".contains("record 1 has label 12"), "\($0)")
        }
        XCTAssertThrowsError(try CIFAR10.load(path: "/nonexistent-cifar", split: "train", classes: 10, mean: 0, std: 1)) {
            XCTAssertTrue("\($0)".contains("/nonexistent-cifar") && "\($0)".contains("data_batch_1.bin"), "\($0)")
        }
    }
}
