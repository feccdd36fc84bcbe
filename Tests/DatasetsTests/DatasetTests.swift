// IDX reading (raw and gzip) and its errors, the global-batch sampler, and augmentations.
import Datasets
import Foundation
import TensorCore
import TestSupport
import XCTest

/// A temporary directory removed when the test case ends.
final class TemporaryDirectory {
    let path: String
    init() throws {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("lockstep-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// The bytes of an IDX file of unsigned bytes: magic 00 00 08 rank, big-endian UInt32 dimensions, data.
func idxBytes(dimensions: [Int], data: [UInt8], typeByte: UInt8 = 0x08) -> [UInt8] {
    var out: [UInt8] = [0, 0, typeByte, UInt8(dimensions.count)]
    for d in dimensions {
        out += [UInt8((d >> 24) & 0xFF), UInt8((d >> 16) & 0xFF), UInt8((d >> 8) & 0xFF), UInt8(d & 0xFF)]
    }
    return out + data
}

func writeFile(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// Compresses `path` to `path.gz` with the system gzip (keeping the original).
func gzipFile(_ path: String) throws -> String {
    let candidates = ["/bin/gzip", "/usr/bin/gzip"]
    guard let tool = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw XCTSkip("gzip is not installed")
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = ["-k", "-f", "-n", path]
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw DataError("gzip failed on \(path)") }
    return path + ".gz"
}

/// Pseudo-random bytes (so that gzip cannot shrink them to almost nothing).
func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    let stream = Philox(seed: seed).stream(.test, 7, 0)
    return (0..<count).map { UInt8(truncatingIfNeeded: stream.word($0)) }
}

/// Asserts that `body` throws a DataError whose message contains every string of `parts`.
func assertDataError<T>(_ body: @autoclosure () throws -> T, mentions parts: [String],
                        file: StaticString = #filePath, line: UInt = #line) {
    assertThrows(try body(), DataError.self, message: { $0.message }, mentions: parts, file: file, line: line)
}

final class IDXTests: XCTestCase {
    var directory: TemporaryDirectory!

    override func setUpWithError() throws { directory = try TemporaryDirectory() }
    override func tearDown() { directory = nil }

    /// 3 images of 2×3 pixels and their labels.
    let pixels: [UInt8] = [0, 255, 51, 102, 153, 204,  1, 2, 3, 4, 5, 6,  10, 20, 30, 40, 50, 60]
    let labels: [UInt8] = [2, 0, 1]

    func writeSplit(_ split: String, images: [UInt8]? = nil, imageCount: Int = 3, labels: [UInt8]? = nil) throws
        -> (images: String, labels: String) {
        let imagesPath = directory.file("\(split)-images-idx3-ubyte")
        let labelsPath = directory.file("\(split)-labels-idx1-ubyte")
        try writeFile(idxBytes(dimensions: [imageCount, 2, 3], data: images ?? pixels), to: imagesPath)
        let l = labels ?? self.labels
        try writeFile(idxBytes(dimensions: [l.count], data: l), to: labelsPath)
        return (imagesPath, labelsPath)
    }

    func testReadRawIDX() throws {
        let paths = try writeSplit("train")
        let images = try readIDX(paths.images, expectedRank: 3)
        XCTAssertEqual(images.dimensions, [3, 2, 3])
        XCTAssertEqual(images.bytes, pixels)
        let labelArray = try readIDX(paths.labels, expectedRank: 1)
        XCTAssertEqual(labelArray.dimensions, [3])
        XCTAssertEqual(labelArray.bytes, labels)
    }

    func testReadGzipIDXEqualsRaw() throws {
        let raw = directory.file("big-images-idx3-ubyte")
        let data = pseudoRandomBytes(4 * 8 * 8, seed: 1)
        try writeFile(idxBytes(dimensions: [4, 8, 8], data: data), to: raw)
        let compressed = try gzipFile(raw)
        let compressedBytes = try Array(Data(contentsOf: URL(fileURLWithPath: compressed)))
        XCTAssertEqual(Array(compressedBytes.prefix(2)), [0x1F, 0x8B], "the .gz file must really be gzip")
        let fromGzip = try readIDX(compressed, expectedRank: 3)
        XCTAssertEqual(fromGzip.dimensions, [4, 8, 8])
        XCTAssertEqual(fromGzip.bytes, data)
    }

    func testLoadDatasetNormalises() throws {
        let paths = try writeSplit("train")
        let dataset = try ImageDataset.load(imagesPath: paths.images, labelsPath: paths.labels, name: "train",
                                            classes: 3, mean: 0.5, std: 0.25)
        XCTAssertEqual(dataset.count, 3)
        XCTAssertEqual(dataset.sampleShape, [1, 2, 3])
        XCTAssertEqual(dataset.labels, [2, 0, 1])
        let expected = pixels.map { (Float($0) / 255 - 0.5) / 0.25 }
        assertClose(Array(dataset.normalizedImages.prefix(pixels.count)), expected, tolerance: 1e-6)
    }

    func testLoadIDXFromDirectoryPrefersGzip() throws {
        let paths = try writeSplit("t10k")
        let gzImages = try gzipFile(paths.images)
        _ = try gzipFile(paths.labels)
        // Make the raw images different: the .gz must be the one that is read.
        try writeFile(idxBytes(dimensions: [3, 2, 3], data: [UInt8](repeating: 0, count: 18)), to: paths.images)
        XCTAssertEqual(try ImageDataset.findFile(directory.path, "t10k-images-idx3-ubyte"), gzImages)
        let dataset = try ImageDataset.loadIDX(directory: directory.path, split: "t10k", classes: 3, mean: 0, std: 1)
        assertClose(Array(dataset.normalizedImages.prefix(pixels.count)), pixels.map { Float($0) / 255 }, tolerance: 1e-6)
    }

    // MARK: Errors: each must be a DataError naming the file

    func testMissingFile() {
        let path = directory.file("nothing-here-idx3-ubyte")
        assertDataError(try readIDX(path, expectedRank: 3), mentions: [path])
        assertDataError(try ImageDataset.loadIDX(directory: directory.path, split: "train", mean: 0, std: 1),
                        mentions: [directory.path, "train-images-idx3-ubyte"])
    }

    func testTruncatedFile() throws {
        // The header says 3 images of 2×3 = 18 bytes; only 10 follow.
        let path = directory.file("short-images-idx3-ubyte")
        try writeFile(idxBytes(dimensions: [3, 2, 3], data: Array(pixels.prefix(10))), to: path)
        assertDataError(try readIDX(path, expectedRank: 3), mentions: [path, "truncated"])
    }

    func testTruncatedHeader() throws {
        let path = directory.file("header-images-idx3-ubyte")
        try writeFile([0, 0, 8, 3, 0, 0, 0, 3, 0], to: path)
        assertDataError(try readIDX(path, expectedRank: 3), mentions: [path, "truncated"])
    }

    func testWrongMagic() throws {
        let path = directory.file("magic-images-idx3-ubyte")
        try writeFile(idxBytes(dimensions: [3, 2, 3], data: pixels, typeByte: 0x0D), to: path)   // 0x0D: float32 IDX
        assertDataError(try readIDX(path, expectedRank: 3), mentions: [path, "magic"])
    }

    func testWrongRank() throws {
        let paths = try writeSplit("train")
        assertDataError(try readIDX(paths.labels, expectedRank: 3), mentions: [paths.labels])
    }

    func testImageLabelCountMismatch() throws {
        let paths = try writeSplit("train", labels: [0, 1])
        assertDataError(try ImageDataset.load(imagesPath: paths.images, labelsPath: paths.labels, name: "train",
                                              classes: 3, mean: 0, std: 1),
                        mentions: [paths.images, paths.labels])
    }

    func testLabelOutsideClasses() throws {
        let paths = try writeSplit("train", labels: [0, 3, 1])
        assertDataError(try ImageDataset.load(imagesPath: paths.images, labelsPath: paths.labels, name: "train",
                                              classes: 3, mean: 0, std: 1),
                        mentions: [paths.labels, "label 3"])
    }

    func testTruncatedGzip() throws {
        let raw = directory.file("cut-images-idx3-ubyte")
        try writeFile(idxBytes(dimensions: [4, 8, 8], data: pseudoRandomBytes(4 * 8 * 8, seed: 2)), to: raw)
        let compressed = try gzipFile(raw)
        let full = try Array(Data(contentsOf: URL(fileURLWithPath: compressed)))
        XCTAssertGreaterThan(full.count, 100)
        try writeFile(Array(full.prefix(full.count / 2)), to: compressed)
        assertDataError(try readIDX(compressed, expectedRank: 3), mentions: [compressed])
    }

    func testACompressedFileIsNotExpandedBeyondWhatItsHeaderDeclares() throws {
        // A header declaring 2×2×2 bytes, then 20 MB of zeros: about 20 KB compressed. Reading
        // stops one byte past the declared size, so the error counts 9 bytes, not 20 million.
        let raw = directory.file("bomb-images-idx3-ubyte")
        try writeFile(idxBytes(dimensions: [2, 2, 2], data: [UInt8](repeating: 0, count: 20_000_000)), to: raw)
        let compressed = try gzipFile(raw)
        assertDataError(try readIDX(compressed, expectedRank: 3), mentions: [compressed, "too long", "9 bytes after the header, expected 8"])
    }

    func testGzipWithTrailingCutOfChecksum() throws {
        // Only the 8-byte trailer (CRC32 and length) is missing: still a truncated stream.
        let raw = directory.file("trailer-images-idx3-ubyte")
        try writeFile(idxBytes(dimensions: [4, 8, 8], data: pseudoRandomBytes(4 * 8 * 8, seed: 3)), to: raw)
        let compressed = try gzipFile(raw)
        let full = try Array(Data(contentsOf: URL(fileURLWithPath: compressed)))
        try writeFile(Array(full.prefix(full.count - 8)), to: compressed)
        assertDataError(try readIDX(compressed, expectedRank: 3), mentions: [compressed])
    }
}

// MARK: - GlobalBatchSampler

final class GlobalBatchSamplerTests: XCTestCase {
    func testPermutationIsAPermutation() {
        let sampler = GlobalBatchSampler(datasetSize: 50, globalBatch: 8, seed: 3)
        for epoch in 0..<3 {
            let order = sampler.permutation(epoch: epoch)
            XCTAssertEqual(order.sorted(), Array(0..<50), "epoch \(epoch)")
            XCTAssertNotEqual(order, Array(0..<50), "shuffled")
        }
    }

    func testPermutationDependsOnSeedAndEpochOnly() {
        let a = GlobalBatchSampler(datasetSize: 40, globalBatch: 8, seed: 11)
        let b = GlobalBatchSampler(datasetSize: 40, globalBatch: 5, seed: 11, dropLast: true)
        XCTAssertEqual(a.permutation(epoch: 2), a.permutation(epoch: 2), "deterministic")
        XCTAssertEqual(a.permutation(epoch: 2), b.permutation(epoch: 2), "independent of batch size and drop-last")
        XCTAssertNotEqual(a.permutation(epoch: 2), a.permutation(epoch: 3), "changes with the epoch")
        let c = GlobalBatchSampler(datasetSize: 40, globalBatch: 8, seed: 12)
        XCTAssertNotEqual(a.permutation(epoch: 2), c.permutation(epoch: 2), "changes with the seed")
        let unshuffled = GlobalBatchSampler(datasetSize: 10, globalBatch: 4, seed: 11, shuffle: false)
        XCTAssertEqual(unshuffled.permutation(epoch: 5), Array(0..<10))
    }

    func testGlobalBatchesAndStepsPerEpoch() {
        let sampler = GlobalBatchSampler(datasetSize: 10, globalBatch: 4, seed: 0, shuffle: false)
        XCTAssertEqual(sampler.stepsPerEpoch, 3)
        let order = sampler.permutation(epoch: 0)
        XCTAssertEqual(Array(sampler.globalBatch(step: 0, order: order)), [0, 1, 2, 3])
        XCTAssertEqual(Array(sampler.globalBatch(step: 2, order: order)), [8, 9], "the last batch is partial")
        XCTAssertEqual(GlobalBatchSampler(datasetSize: 10, globalBatch: 4, seed: 0, dropLast: true).stepsPerEpoch, 2)
    }

    func testShardSizesLowerRanksTakeOneMore() {
        let ranges = (0..<4).map { GlobalBatchSampler.shard(total: 10, rank: $0, worldSize: 4) }
        XCTAssertEqual(ranges, [0..<3, 3..<6, 6..<8, 8..<10])
        let small = (0..<4).map { GlobalBatchSampler.shard(total: 2, rank: $0, worldSize: 4) }
        XCTAssertEqual(small.map { $0.count }, [1, 1, 0, 0])
        XCTAssertEqual(small.map { $0.lowerBound }, [0, 1, 2, 2])
    }

    func testShardsCoverTheBatchExactly() {
        for total in [0, 1, 5, 7, 12, 13] {
            for worldSize in 1...5 {
                let ranges = (0..<worldSize).map { GlobalBatchSampler.shard(total: total, rank: $0, worldSize: worldSize) }
                XCTAssertEqual(ranges.first?.lowerBound, 0)
                XCTAssertEqual(ranges.last?.upperBound, total, "total \(total), world \(worldSize)")
                for r in 1..<worldSize { XCTAssertEqual(ranges[r].lowerBound, ranges[r - 1].upperBound) }
                let counts = ranges.map { $0.count }
                XCTAssertLessThanOrEqual(counts.max()! - counts.min()!, 1)
                XCTAssertEqual(counts, counts.sorted(by: >), "lower ranks take the remainder")
            }
        }
    }

    func testConcatenatedShardsEqualGlobalBatchForWorldSizes1To4() {
        let sampler = GlobalBatchSampler(datasetSize: 23, globalBatch: 7, seed: 5)
        let order = sampler.permutation(epoch: 1)
        for step in 0..<sampler.stepsPerEpoch {
            let batch = Array(sampler.globalBatch(step: step, order: order))
            for worldSize in 1...4 {
                var concatenated = [Int]()
                for rank in 0..<worldSize {
                    let part = GlobalBatchSampler.shard(total: batch.count, rank: rank, worldSize: worldSize)
                    concatenated += batch[part]
                }
                XCTAssertEqual(concatenated, batch, "step \(step), world size \(worldSize)")
            }
        }
    }
}

// MARK: - Augmentation

final class AugmentationTests: XCTestCase {
    /// `count` copies of one 1×3×4 image with distinct pixels 0, 1, ..., 11.
    func dataset(count: Int) -> ImageDataset {
        let image = (0..<12).map { Float($0) }
        return ImageDataset(name: "fixture", sampleShape: [1, 3, 4], classes: 2,
                            pixels: Array((0..<count).map { _ in image }.joined()),
                            labels: [Int32](repeating: 0, count: count))
    }

    let original: [Float] = (0..<12).map { Float($0) }
    let mirrored: [Float] = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8]

    func apply(_ augmentation: Augmentation, _ data: ImageDataset, index: Int, epoch: Int = 0, seed: UInt64 = 1,
               padValue: Float = -1) -> [Float] {
        var out = [Float](repeating: .nan, count: data.sampleSize)
        out.withUnsafeMutableBufferPointer {
            augmentation.apply(dataset: data, index: index, epoch: epoch, seed: seed, padValue: padValue,
                               into: $0.baseAddress!)
        }
        return out
    }

    func testIdentity() {
        let data = dataset(count: 2)
        XCTAssertTrue(Augmentation().isIdentity)
        XCTAssertEqual(apply(Augmentation(), data, index: 1), original)
    }

    func testHorizontalFlipIsAMirrorAboutHalfTheTime() {
        let data = dataset(count: 64)
        let flip = Augmentation(horizontalFlip: true)
        var flipped = 0
        for index in 0..<64 {
            let out = apply(flip, data, index: index)
            if out == mirrored {
                flipped += 1
            } else {
                XCTAssertEqual(out, original, "sample \(index) must be either unchanged or mirrored left-right")
            }
        }
        // 64 fair coin flips: 32 ± 4 (σ); 12...52 is 5σ.
        XCTAssertGreaterThan(flipped, 12)
        XCTAssertLessThan(flipped, 52)
    }

    func testAugmentationIsKeyedBySampleIndexEpochAndSeed() {
        let data = dataset(count: 40)
        let augmentation = Augmentation(horizontalFlip: true, cropPadding: 1)
        let forward = (0..<40).map { apply(augmentation, data, index: $0, epoch: 3) }
        let backward = (0..<40).reversed().map { apply(augmentation, data, index: $0, epoch: 3) }
        XCTAssertEqual(forward, Array(backward.reversed()), "a sample's augmentation does not depend on call order")
        // Every image is identical, so differences between samples come only from the index.
        XCTAssertGreaterThan(Set(forward.map { $0.description }).count, 4, "different indices get different augmentations")
        let otherEpoch = (0..<40).map { apply(augmentation, data, index: $0, epoch: 4) }
        XCTAssertNotEqual(forward, otherEpoch, "the epoch changes the augmentation")
        let otherSeed = (0..<40).map { apply(augmentation, data, index: $0, epoch: 3, seed: 2) }
        XCTAssertNotEqual(forward, otherSeed, "the seed changes the augmentation")
    }

    func testRandomCropIsAShiftFilledWithPadValue() {
        let data = dataset(count: 30)
        let crop = Augmentation(cropPadding: 1)
        var shiftsSeen = Set<[Int]>()
        for index in 0..<30 {
            let out = apply(crop, data, index: index, padValue: -1)
            var match: [Int]?
            for dy in -1...1 {
                for dx in -1...1 {
                    var expected = [Float]()
                    for y in 0..<3 {
                        for x in 0..<4 {
                            let sy = y + dy, sx = x + dx
                            expected.append(sy >= 0 && sy < 3 && sx >= 0 && sx < 4 ? Float(sy * 4 + sx) : -1)
                        }
                    }
                    if out == expected { match = [dy, dx] }
                }
            }
            XCTAssertNotNil(match, "sample \(index): \(out) is not a shift of the image by at most one pixel")
            if let match { shiftsSeen.insert(match) }
        }
        XCTAssertGreaterThan(shiftsSeen.count, 3, "30 samples should see several of the 9 shifts")
    }
}
