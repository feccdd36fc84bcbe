// Translation, random erasing and Gaussian noise: what each does to a known image, and that all
// three are keyed by (seed, epoch, sample index) like flip and crop.
import XCTest
@testable import Datasets
import TensorCore

final class AugmentationExtraTests: XCTestCase {
    /// `count` copies of one 1×10×10 image with pixels 1...100 (none is 0, the erased value).
    func dataset(count: Int) -> ImageDataset {
        ImageDataset(name: "fixture", sampleShape: [1, 10, 10], classes: 2,
                     pixels: Array((0..<count).map { _ in image }.joined()),
                     labels: [Int32](repeating: 0, count: count))
    }

    let image: [Float] = (1...100).map { Float($0) }

    func apply(_ a: Augmentation, _ data: ImageDataset, index: Int, epoch: Int = 0, seed: UInt64 = 1) -> [Float] {
        var out = [Float](repeating: .nan, count: data.sampleSize)
        out.withUnsafeMutableBufferPointer {
            a.apply(dataset: data, index: index, epoch: epoch, seed: seed, padValue: -1, into: $0.baseAddress!)
        }
        return out
    }

    func shifted(dy: Int, dx: Int) -> [Float] {
        var expected = [Float]()
        for y in 0..<10 {
            for x in 0..<10 {
                let sy = y + dy, sx = x + dx
                expected.append(sy >= 0 && sy < 10 && sx >= 0 && sx < 10 ? image[sy * 10 + sx] : -1)
            }
        }
        return expected
    }

    func testTranslationShiftsByAtMostTheFractionOfTheSize() {
        let data = dataset(count: 60)
        // 0.2 of 10 pixels: shifts of −2...2 in each direction, 25 possibilities.
        let a = Augmentation(translate: 0.2)
        XCTAssertFalse(a.isIdentity)
        var seen = Set<[Int]>()
        for index in 0..<60 {
            let out = apply(a, data, index: index)
            var match: [Int]?
            for dy in -2...2 { for dx in -2...2 where shifted(dy: dy, dx: dx) == out { match = [dy, dx] } }
            XCTAssertNotNil(match, "sample \(index) is not a shift by at most 2 pixels")
            if let match { seen.insert(match) }
        }
        XCTAssertGreaterThan(seen.count, 10, "60 samples should see many of the 25 shifts")
        XCTAssertTrue(seen.contains { abs($0[0]) == 2 || abs($0[1]) == 2 }, "the largest shift is reachable")
    }

    func testErasingZeroesOneRectangleOfTheConfiguredAreaAndAspect() {
        let data = dataset(count: 100)
        let a = Augmentation(erasingProbability: 1, erasingArea: 0.1...0.3, erasingAspect: 0.5)
        for index in 0..<100 {
            let out = apply(a, data, index: index)
            let erased = (0..<100).filter { out[$0] == 0 }
            XCTAssertTrue((0..<100).allSatisfy { out[$0] == 0 || out[$0] == image[$0] }, "only erased pixels change")
            // The zeros form a full rectangle: its bounding box holds nothing else.
            let ys = erased.map { $0 / 10 }, xs = erased.map { $0 % 10 }
            let h = ys.max()! - ys.min()! + 1, w = xs.max()! - xs.min()! + 1
            XCTAssertEqual(erased.count, h * w, "sample \(index): the erased pixels are one rectangle")
            // Side lengths are rounded to whole pixels, so the area can move by up to half a pixel
            // per side: 10–30 pixels becomes roughly 6–38; the aspect h/w stays in [0.5, 2]
            // before rounding and within [1/3, 3] after it for sides of 2 or more.
            XCTAssertTrue((6...38).contains(h * w), "sample \(index): area \(h * w)")
            XCTAssertLessThanOrEqual(Double(max(h, w)) / Double(min(h, w)), 3.0, "sample \(index): \(h)×\(w)")
        }
        // With p = 0.5 about half the samples are erased: 200 fair coins give 100 ± 7 (σ); 65...135 is 5σ.
        let half = Augmentation(erasingProbability: 0.5)
        let data200 = dataset(count: 200)
        let count = (0..<200).filter { apply(half, data200, index: $0).contains(0) }.count
        XCTAssertTrue((65...135).contains(count), "\(count) of 200 erased with p = 0.5")
    }

    func testNoiseHasTheConfiguredSpreadAndIsKeyedBySample() {
        let data = dataset(count: 200)
        let a = Augmentation(noise: 0.5)
        var diffs = [Double]()
        for index in 0..<200 {
            let out = apply(a, data, index: index)
            diffs += zip(out, image).map { Double($0 - $1) }
        }
        let mean = diffs.reduce(0, +) / Double(diffs.count)
        let sd = (diffs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(diffs.count - 1)).squareRoot()
        // 20,000 normal draws: the mean's standard error is 0.5/√20000 ≈ 0.0035 and the standard
        // deviation's about 0.0025, so 0.02 is more than 5 standard errors for both.
        XCTAssertEqual(mean, 0, accuracy: 0.02)
        XCTAssertEqual(sd, 0.5, accuracy: 0.02)
        XCTAssertEqual(apply(a, data, index: 7), apply(a, data, index: 7), "the same sample gets the same noise")
        XCTAssertNotEqual(apply(a, data, index: 7), apply(a, data, index: 8), "different samples get different noise")
        XCTAssertNotEqual(apply(a, data, index: 7, epoch: 0), apply(a, data, index: 7, epoch: 1), "the epoch changes it")
    }

    func testAllAugmentationsTogetherDependOnlyOnIndexEpochAndSeed() {
        let data = dataset(count: 30)
        let a = Augmentation(horizontalFlip: true, cropPadding: 1, translate: 0.1, erasingProbability: 0.5, noise: 0.1)
        let forward = (0..<30).map { apply(a, data, index: $0, epoch: 2) }
        let backward = (0..<30).reversed().map { apply(a, data, index: $0, epoch: 2) }
        XCTAssertEqual(forward, Array(backward.reversed()), "call order does not matter")
        XCTAssertNotEqual(forward, (0..<30).map { apply(a, data, index: $0, epoch: 2, seed: 9) }, "the seed matters")
    }
}
