// Crops of a stored square (Datasets/ResizedCrop.swift): the centre for evaluation, random
// resized boxes for training keyed by (seed, epoch, index), and the bilinear scaling of a box.
import Datasets
import TensorCore
import XCTest

final class ResizedCropTests: XCTestCase {
    /// Two 1×4×4 samples stored as bytes 0...15 and 100...115, seen as 1×2×2, with mean 0 and
    /// std 1/255 so that a normalised value is the byte itself.
    func dataset() -> ImageDataset {
        ImageDataset(name: "squares", sampleShape: [1, 2, 2], storedShape: [1, 4, 4], classes: 2,
                     bytes: (0..<16).map { UInt8($0) } + (0..<16).map { UInt8(100 + $0) }, labels: [0, 1], mean: 0, std: 1 / 255)
    }

    func values(_ body: (UnsafeMutablePointer<Float>) -> Void) -> [Float] {
        var out = [Float](repeating: -1, count: 4)
        out.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
        return out
    }

    /// The normalising scale 1/(255·std) is 1 only to float rounding (~1e-7 relative), so a
    /// value ≤ 115 is within ~2e-5 of its byte; 1e-3 is far below a one-level (1.0) error.
    func assertBytes(_ got: [Float], _ expected: [Float], line: UInt = #line) {
        XCTAssertEqual(got.count, expected.count, line: line)
        for (g, e) in zip(got, expected) { XCTAssertEqual(g, e, accuracy: 1e-3, "\(got)", line: line) }
    }

    func testTheCentreAndAnExactBoxAreCopiedPixelForPixel() {
        let d = dataset()
        assertBytes(values { d.copySample(1, into: $0) }, [105, 106, 109, 110])   // the centre 2×2 of sample 1
        assertBytes(values { d.copyRegion(0, CropBox(top: 2, left: 0, height: 2, width: 2), into: $0) }, [8, 9, 12, 13])
        // The whole 4×4 scaled to 2×2: each output centre lies between four inputs (their mean).
        assertBytes(values { d.copyRegion(0, CropBox(top: 0, left: 0, height: 4, width: 4), into: $0) }, [2.5, 4.5, 10.5, 12.5])
    }

    func testBoxesAreKeyedBySampleAndEpochAndStayInside() {
        let rng = Philox(seed: 7)
        var seen = Set<[Int]>()
        for index in 0..<50 {
            let box = Augmentation.resizedCropBox(side: 32, scale: 0.08...1, ratio: 0.75...(4.0 / 3.0), stream: rng.stream(.resizedCrop, 0, index))
            XCTAssertEqual(box, Augmentation.resizedCropBox(side: 32, scale: 0.08...1, ratio: 0.75...(4.0 / 3.0), stream: rng.stream(.resizedCrop, 0, index)), "a pure function of the key")
            XCTAssertTrue(box.top >= 0 && box.left >= 0 && box.height > 0 && box.width > 0 && box.top + box.height <= 32 && box.left + box.width <= 32, "\(box)")
            let area = Double(box.height * box.width) / 1024
            XCTAssertTrue(area >= 0.05 && area <= 1.0, "area \(area) near the scale range (rounding to whole pixels)")
            seen.insert([box.top, box.left, box.height, box.width])
        }
        XCTAssertGreaterThan(seen.count, 40, "boxes vary with the sample")
        let whole = Augmentation.resizedCropBox(side: 32, scale: 1...1, ratio: 1...1, stream: rng.stream(.resizedCrop, 3, 3))
        XCTAssertEqual(whole, CropBox(top: 0, left: 0, height: 32, width: 32))
    }

    func testTrainingTakesTheKeyedBoxAndEvaluationTheCentre() {
        let d = dataset()
        var aug = Augmentation()
        aug.resizedCropScale = 0.2...0.6
        for (epoch, index) in [(0, 0), (1, 0), (4, 1)] {
            let box = Augmentation.resizedCropBox(side: 4, scale: 0.2...0.6, ratio: aug.resizedCropRatio, stream: Philox(seed: 5).stream(.resizedCrop, epoch, index))
            XCTAssertEqual(values { aug.apply(dataset: d, index: index, epoch: epoch, seed: 5, padValue: 0, into: $0) },
                           values { d.copyRegion(index, box, into: $0) })
        }
        assertBytes(values { Augmentation().apply(dataset: d, index: 0, epoch: 0, seed: 5, padValue: 0, into: $0) }, [5, 6, 9, 10])
    }
}
