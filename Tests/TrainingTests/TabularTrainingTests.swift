// Training on CSV data from a config: the same bits on any number of ranks, one-hot label
// columns train exactly like integer labels, and config errors for the tabular keys.
import Collectives
import Configuration
import Formats
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class TabularTrainingTests: XCTestCase {
    func writeTables() throws -> String { try writeTabularTables() }
    func config(_ dir: String, labels: String) -> String { tabularConfig(dir, labels: labels) }

    func train(_ yaml: String, ranks: Int) throws -> (history: [EpochMetrics], state: [UInt32]) {
        let config = try TrainingConfig.parse(yaml: yaml, file: "tab.yaml")
        let data = try TrainingData.load(config)
        return try ThreadCommunicator.run(size: ranks) { comm in
            let t = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            return (try t.run(), stateBits(t))
        }[0]
    }

    func testCSVTrainsTheSameBitsOnAnyNumberOfRanks() throws {
        let dir = try writeTables()
        let integer = try train(config(dir, labels: "label_column: label, train_file: train.csv"), ranks: 1)
        XCTAssertEqual(integer.history.count, 3)
        XCTAssertGreaterThan(integer.history.last!.testAccuracy, 0.9, "two well-separated blobs: a 2-layer net exceeds 90% in 3 epochs")
        let three = try train(config(dir, labels: "label_column: label"), ranks: 3)
        XCTAssertEqual(three.state, integer.state, "exact mode: the same bits on 1 and 3 ranks")
    }

    func testOneHotColumnsGiveTheIntegerLabels() throws {
        let dir = try writeTables()
        let a = try TrainingData.load(try TrainingConfig.parse(yaml: config(dir, labels: "label_column: label"), file: "a.yaml"))
        let b = try TrainingData.load(try TrainingConfig.parse(yaml: config(dir, labels: "label_columns: [is0, is1]"), file: "b.yaml"))
        XCTAssertEqual(a.train.labels, b.train.labels)
        XCTAssertEqual(a.test.labels, b.test.labels)
        XCTAssertEqual(a.train.sampleShape, [5], "x, y, z and the two unused label columns")
        XCTAssertEqual(b.train.sampleShape, [4], "x, y, z and the integer label column")
        // Standardised with the training file's statistics: each training column has mean 0.
        let f = a.train.normalizedImages
        for j in 0..<5 {
            let mean = stride(from: j, to: f.count, by: 5).map { Double(f[$0]) }.reduce(0, +) / 96
            XCTAssertEqual(mean, 0, accuracy: 1e-5, "column \(j): Float rounding of 96 values near 1")
        }
    }

    func testTabularConfigErrors() throws {
        let dir = try writeTables()
        let cases: [(String, [String])] = [
            (config(dir, labels: "label_column: label, augment: {horizontal_flip: true}"), ["data.augment", "csv"]),
            (config(dir, labels: "label_column: label, label_columns: [is0, is1]"), ["label_column", "label_columns"]),
            (config(dir, labels: "label_column: label, delimiter: ';;'"), ["data.delimiter", "single character"]),
            (config(dir, labels: "label_column: nothere"), ["no label column 'nothere'", "train.csv"]),
            (config(dir, labels: "label_column: label").replacingOccurrences(of: "format: csv", with: "format: parquet"), ["data.format", "parquet", "csv"]),
            (config("/nonexistent-tab", labels: "label_column: label"), ["/nonexistent-tab/train.csv", "not found"]),
        ]
        for (yaml, parts) in cases {
            XCTAssertThrowsError(try TrainingData.load(try TrainingConfig.parse(yaml: yaml, file: "tab.yaml"))) { error in
                for p in parts { XCTAssertTrue("\(error)".contains(p), "'\(p)' missing from: \(error)") }
            }
        }
    }
}
