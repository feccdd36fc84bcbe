// The Dataset protocol: how a Swift program brings its own in-memory or generated data to the
// trainer (`import Lockstep`). A conforming type says how many samples it has, their shape and
// class count, and writes one sample's features and label on request; `ImageDataset(_:)` reads
// it once into memory, where the trainer's loader, sampler and augmentations take over, keyed by
// the global sample index like every other source.

public protocol Dataset {
    /// Samples in the split.
    var count: Int { get }
    /// One sample's shape: `[features]` for tabular data, `[channels, height, width]` for images.
    var sampleShape: [Int] { get }
    /// Classes; labels are 0 ..< classes.
    var classes: Int { get }
    /// Writes sample `index`'s features (already normalised as the model should see them) into
    /// `features` (sampleShape's product of floats) and returns its label.
    func sample(_ index: Int, into features: UnsafeMutableBufferPointer<Float>) -> Int
}

/// Why a custom dataset cannot be used.
public struct DatasetError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

extension ImageDataset {
    /// Reads every sample of `source` into memory. Throws when the shape is empty, a label is
    /// out of range or a feature is not finite, naming the sample.
    public convenience init(_ source: some Dataset, name: String = "custom") throws {
        let size = source.sampleShape.reduce(1, *)
        guard !source.sampleShape.isEmpty, size > 0, source.count > 0, source.classes > 1 else {
            throw DatasetError(message: "\(name): a dataset needs samples, a non-empty sample shape and at least 2 classes (got \(source.count) samples of \(source.sampleShape), \(source.classes) classes)")
        }
        var pixels = [Float](repeating: 0, count: source.count * size)
        var labels = [Int32](repeating: 0, count: source.count)
        try pixels.withUnsafeMutableBufferPointer { all in
            for i in 0..<source.count {
                let row = UnsafeMutableBufferPointer(rebasing: all[(i * size)..<((i + 1) * size)])
                let label = source.sample(i, into: row)
                guard (0..<source.classes).contains(label) else {
                    throw DatasetError(message: "\(name): sample \(i) has label \(label), expected 0..<\(source.classes)")
                }
                guard row.allSatisfy({ $0.isFinite }) else { throw DatasetError(message: "\(name): sample \(i) has a non-finite feature") }
                labels[i] = Int32(label)
            }
        }
        self.init(name: name, sampleShape: source.sampleShape, classes: source.classes, pixels: pixels, labels: labels)
    }
}
