// An in-memory image classification dataset: images as (N, C, H, W), labels as Int32.
//
// IDX data stays in its bytes (a quarter of the memory of floats, which matters with one copy
// per rank and dozens of ranks per node) and is normalised when a sample is copied out.
import Foundation
import TensorCore

public final class ImageDataset: @unchecked Sendable {
    enum Storage {
        /// Raw pixels; a sample's value is byte·scale + shift.
        case bytes(UnsafeMutableBufferPointer<UInt8>, scale: Float, shift: Float)
        case floats(UnsafeMutableBufferPointer<Float>)
        /// Samples read when used (image files with data.stream, packed shards): nothing of the
        /// pixels is held. Bytes are normalised as above; float records are used as they are.
        case streamed(any SampleSource, scale: Float, shift: Float)
        case streamedFloats(any SampleSource)
    }

    public let name: String
    public let count: Int
    public let sampleShape: [Int]     // (C, H, W)
    /// What each sample holds in storage: `sampleShape`, or (image folders) a larger square
    /// (C, R, R) that a sample is cut from: its centre, or a random resized crop in training
    /// (ResizedCrop.swift).
    public let storedShape: [Int]
    public let classes: Int
    public let labels: [Int32]
    let storage: Storage
    /// The normalisation applied to byte pixels (nil for float datasets).
    public private(set) var mean: Float?
    public private(set) var std: Float?
    public var sampleSize: Int { sampleShape.reduce(1, *) }
    /// Bytes held for the pixels and labels.
    public var storageBytes: Int {
        switch storage {
        case .bytes(let b, _, _): return b.count + 4 * count
        case .floats(let f): return 4 * f.count + 4 * count
        case .streamed(let f, _, _), .streamedFloats(let f): return f.residentBytes + 4 * count
        }
    }

    /// A dataset of already normalised float pixels, (count, C, H, W).
    public init(name: String, sampleShape: [Int], classes: Int, pixels: [Float], labels: [Int32]) {
        self.name = name
        self.sampleShape = sampleShape
        self.classes = classes
        self.count = labels.count
        self.labels = labels
        self.storedShape = sampleShape
        let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(pixels.count, 1))
        _ = b.initialize(from: pixels)
        storage = .floats(b)
    }

    /// A dataset of byte pixels, normalised on the way out as (byte/255 − mean)/std.
    /// With `storedShape` (C, R, R), each sample's bytes are an R × R square holding the
    /// (C, S, S) `sampleShape` (R ≥ S).
    public init(name: String, sampleShape: [Int], storedShape: [Int]? = nil, classes: Int, bytes: [UInt8], labels: [Int32], mean: Float, std: Float) {
        self.name = name
        self.sampleShape = sampleShape
        self.storedShape = storedShape ?? sampleShape
        self.classes = classes
        self.count = labels.count
        self.labels = labels
        let b = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(bytes.count, 1))
        _ = b.initialize(from: bytes)
        storage = .bytes(b, scale: 1 / (255 * std), shift: -mean / std)
        self.mean = mean
        self.std = std
    }

    /// Streamed samples (image files, packed shards), read each time a sample is used: bytes
    /// normalised as (byte/255 − mean)/std, or with `mean` and `std` nil, float records as stored.
    public init(name: String, sampleShape: [Int], storedShape: [Int], classes: Int, source: any SampleSource, labels: [Int32], mean: Float?, std: Float?) {
        self.name = name
        self.sampleShape = sampleShape
        self.storedShape = storedShape
        self.classes = classes
        self.count = labels.count
        self.labels = labels
        if let mean, let std {
            storage = .streamed(source, scale: 1 / (255 * std), shift: -mean / std)
        } else {
            storage = .streamedFloats(source)
        }
        self.mean = mean
        self.std = std
    }

    /// The source of a streamed dataset (nil for in-memory data).
    public var source: (any SampleSource)? {
        switch storage {
        case .streamed(let f, _, _), .streamedFloats(let f): return f
        default: return nil
        }
    }

    /// Runs `body` on sample `index` as stored: bytes (C·R·R) or floats (4 bytes each),
    /// unnormalised (for `lockstep pack`).
    public func withStoredSample(_ index: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        let n = storedShape.reduce(1, *)
        switch storage {
        case .bytes(let b, _, _): body(UnsafeRawBufferPointer(start: b.baseAddress! + index * n, count: n))
        case .floats(let f): body(UnsafeRawBufferPointer(start: f.baseAddress! + index * n, count: 4 * n))
        case .streamed(let f, _, _): f.withSample(index) { body(UnsafeRawBufferPointer(start: $0, count: n)) }
        case .streamedFloats(let f): f.withSample(index) { body(UnsafeRawBufferPointer(start: $0, count: 4 * n)) }
        }
    }

    /// Whether samples are stored as bytes (pixels) rather than floats.
    public var storesBytes: Bool {
        switch storage {
        case .bytes, .streamed: return true
        case .floats, .streamedFloats: return false
        }
    }

    deinit {
        switch storage {
        case .bytes(let b, _, _): b.deallocate()
        case .floats(let f): f.deallocate()
        case .streamed, .streamedFloats: break
        }
    }

    /// The first error met while reading a streamed sample since the last call (a file changed
    /// or removed after start-up), to be thrown by the loader; nil for in-memory data.
    public func takeFailure() -> String? {
        return source?.takeFailure()
    }

    /// Writes sample `index`, normalised, into `out` (sampleSize floats).
    @inline(__always)
    public func copySample(_ index: Int, into out: UnsafeMutablePointer<Float>) {
        if storedShape != sampleShape { return copyCentre(index, into: out) }
        let n = sampleSize
        switch storage {
        case let .bytes(b, scale, shift):
            let src = b.baseAddress! + index * n
            for i in 0..<n { out[i] = Float(src[i]) * scale + shift }
        case .floats(let f):
            out.update(from: f.baseAddress! + index * n, count: n)
        case let .streamed(f, scale, shift):
            f.withSample(index) { raw in
                let src = raw.assumingMemoryBound(to: UInt8.self)
                for i in 0..<n { out[i] = Float(src[i]) * scale + shift }
            }
        case .streamedFloats(let f):
            f.withSample(index) { out.update(from: $0.assumingMemoryBound(to: Float.self), count: n) }
        }
    }

    /// Every sample, normalised, as one array (for tools and tests).
    public var normalizedImages: [Float] {
        var all = [Float](repeating: 0, count: count * sampleSize)
        all.withUnsafeMutableBufferPointer { buf in
            for i in 0..<count { copySample(i, into: buf.baseAddress! + i * sampleSize) }
        }
        return all
    }

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
        // Missing statistics come from this split's own pixels.
        let stats = (mean != nil && std != nil) ? (mean!, std!) : statistics(images.bytes)
        let (m, s) = (mean ?? stats.0, std ?? stats.1)
        guard s > 0, s.isFinite, m.isFinite else { throw DataError("\(imagesPath): normalisation needs a finite mean and std > 0, got \(m), \(s)") }
        return ImageDataset(name: name, sampleShape: [1, images.dimensions[1], images.dimensions[2]],
                            classes: classes, bytes: images.bytes, labels: labels.bytes.map { Int32($0) }, mean: m, std: s)
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
