// An in-memory image classification dataset: images as (N, C, H, W) floats, labels as Int32.
import Foundation
import TensorCore

public final class ImageDataset: @unchecked Sendable {
    public let name: String
    public let count: Int
    public let sampleShape: [Int]     // (C, H, W)
    public let classes: Int
    /// Normalised pixels, (count, C, H, W).
    public let images: UnsafeMutableBufferPointer<Float>
    public let labels: [Int32]
    public var sampleSize: Int { sampleShape.reduce(1, *) }

    public init(name: String, sampleShape: [Int], classes: Int, pixels: [Float], labels: [Int32]) {
        self.name = name
        self.sampleShape = sampleShape
        self.classes = classes
        self.count = labels.count
        self.labels = labels
        images = .allocate(capacity: max(pixels.count, 1))
        _ = images.initialize(from: pixels)
    }

    deinit { images.deallocate() }

    /// Mean and standard deviation of the (unnormalised) pixels, over the whole set.
    public static func statistics(_ pixels: [UInt8]) -> (mean: Float, std: Float) {
        var sum = 0.0, sumSq = 0.0
        for p in pixels { let v = Double(p) / 255; sum += v; sumSq += v * v }
        let n = Double(max(pixels.count, 1))
        let mean = sum / n
        return (Float(mean), Float(max(sumSq / n - mean * mean, 1e-12).squareRoot()))
    }

    /// Loads an MNIST-style split (`train` or `t10k`) from a directory of IDX files (.gz or not),
    /// scaling pixels to [0, 1] and normalising with (mean, std).
    public static func loadIDX(directory: String, split: String, classes: Int = 10,
                               mean: Float, std: Float) throws -> ImageDataset {
        let imagesPath = try findFile(directory, "\(split)-images-idx3-ubyte")
        let labelsPath = try findFile(directory, "\(split)-labels-idx1-ubyte")
        return try load(imagesPath: imagesPath, labelsPath: labelsPath, name: split, classes: classes, mean: mean, std: std)
    }

    public static func load(imagesPath: String, labelsPath: String, name: String, classes: Int,
                            mean: Float?, std: Float?) throws -> ImageDataset {
        let images = try readIDX(imagesPath, expectedRank: 3)
        let labels = try readIDX(labelsPath, expectedRank: 1)
        guard images.dimensions[0] == labels.dimensions[0] else {
            throw DataError("\(imagesPath): \(images.dimensions[0]) images but \(labelsPath) has \(labels.dimensions[0]) labels")
        }
        if let bad = labels.bytes.firstIndex(where: { Int($0) >= classes }) {
            throw DataError("\(labelsPath): label \(labels.bytes[bad]) at index \(bad) is outside 0..<\(classes)")
        }
        let stats = (mean != nil && std != nil) ? (mean!, std!) : statistics(images.bytes)
        let (m, s) = (mean ?? stats.0, std ?? stats.1)
        let inv = 1 / s
        let pixels = images.bytes.map { (Float($0) / 255 - m) * inv }
        return ImageDataset(name: name, sampleShape: [1, images.dimensions[1], images.dimensions[2]],
                            classes: classes, pixels: pixels, labels: labels.bytes.map { Int32($0) })
    }

    /// `base` or `base.gz` in `directory`.
    public static func findFile(_ directory: String, _ base: String) throws -> String {
        for candidate in ["\(base).gz", base] {
            let path = (directory as NSString).appendingPathComponent(candidate)
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        throw DataError("\(directory): missing \(base)(.gz); expected Fashion-MNIST/MNIST IDX files (Debian: apt-get install dataset-fashion-mnist)")
    }
}
