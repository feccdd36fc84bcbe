// The Dataset protocol (Datasets/CustomDataset.swift): a program's own samples are read once,
// features and labels as given, and bad ones are refused naming the sample.
import Datasets
import XCTest

final class CustomDatasetTests: XCTestCase {
    struct Ramp: Dataset {
        var count = 5
        var sampleShape = [3]
        var classes = 2
        var badLabelAt: Int? = nil
        var nanAt: Int? = nil
        func sample(_ index: Int, into features: UnsafeMutableBufferPointer<Float>) -> Int {
            for j in 0..<3 { features[j] = Float(10 * index + j) }
            if index == nanAt { features[1] = .nan }
            return index == badLabelAt ? 7 : index % 2
        }
    }

    func testSamplesAreReadAsGiven() throws {
        let d = try ImageDataset(Ramp(), name: "ramp")
        XCTAssertEqual(d.count, 5)
        XCTAssertEqual(d.sampleShape, [3])
        XCTAssertEqual(d.labels, [0, 1, 0, 1, 0])
        // Features are copied, not normalised: exact equality is the contract.
        XCTAssertEqual(d.normalizedImages, (0..<5).flatMap { i in (0..<3).map { Float(10 * i + $0) } })
    }

    func testBadSamplesAreNamed() {
        XCTAssertThrowsError(try ImageDataset(Ramp(badLabelAt: 3), name: "ramp")) { error in
            XCTAssertEqual("\(error)", "ramp: sample 3 has label 7, expected 0..<2")
        }
        XCTAssertThrowsError(try ImageDataset(Ramp(nanAt: 2), name: "ramp")) { error in
            XCTAssertEqual("\(error)", "ramp: sample 2 has a non-finite feature")
        }
        XCTAssertThrowsError(try ImageDataset(Ramp(count: 0), name: "ramp")) { error in
            XCTAssertTrue("\(error)".hasPrefix("ramp: a dataset needs samples"), "\(error)")
        }
    }
}
