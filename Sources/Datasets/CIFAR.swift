// CIFAR-10's binary format (Krizhevsky 2009, "cifar-10-batches-bin"): records of one label byte
// and 3×32×32 pixel bytes (the red plane, then green, then blue, each row by row). The training
// split is data_batch_1.bin ... data_batch_5.bin, the test split test_batch.bin.
import Foundation

public enum CIFAR10 {
    public static let side = 32, channels = 3
    public static let recordSize = 1 + channels * side * side   // 3073 bytes
    public static let trainFiles = (1...5).map { "data_batch_\($0).bin" }
    public static let testFiles = ["test_batch.bin"]

    /// The directory holding the batches: `path` itself or its `cifar-10-batches-bin` subdirectory.
    public static func directory(_ path: String) throws -> String {
        for dir in [path, (path as NSString).appendingPathComponent("cifar-10-batches-bin")]
            where FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent(testFiles[0])) {
            return dir
        }
        throw DataError("\(path): no CIFAR-10 binary batches (expected \(testFiles[0]) and data_batch_1.bin ... data_batch_5.bin, here or in cifar-10-batches-bin/)")
    }

    /// Reads the records of `files` in `directory` (each may be gzip-compressed) into pixels and labels.
    public static func read(directory: String, files: [String], classes: Int) throws -> (pixels: [UInt8], labels: [Int32]) {
        var pixels = [UInt8](), labels = [Int32]()
        for name in files {
            let path = (directory as NSString).appendingPathComponent(name)
            let bytes = try readPossiblyCompressed(path)
            guard !bytes.isEmpty, bytes.count % recordSize == 0 else {
                throw DataError("\(path): \(bytes.count) bytes is not a whole number of \(recordSize)-byte CIFAR-10 records (1 label byte + 3×32×32 pixels); truncated or not CIFAR-10")
            }
            let count = bytes.count / recordSize
            pixels.reserveCapacity(pixels.count + count * (recordSize - 1))
            for r in 0..<count {
                let base = r * recordSize
                guard Int(bytes[base]) < classes else {
                    throw DataError("\(path): record \(r) has label \(bytes[base]), outside 0..<\(classes) (data.classes)")
                }
                labels.append(Int32(bytes[base]))
                pixels.append(contentsOf: bytes[(base + 1)..<(base + recordSize)])
            }
        }
        return (pixels, labels)
    }

    /// One split as a dataset of byte pixels, normalised with (mean, std), or with statistics of
    /// its own pixels when they are nil.
    public static func load(path: String, split: String, classes: Int, mean: Float?, std: Float?) throws -> ImageDataset {
        let dir = try directory(path)
        let (pixels, labels) = try read(directory: dir, files: split == "train" ? trainFiles : testFiles, classes: classes)
        let stats = ImageDataset.statistics(pixels)
        return ImageDataset(name: split, sampleShape: [channels, side, side], classes: classes, bytes: pixels,
                            labels: labels, mean: mean ?? stats.mean, std: std ?? stats.std)
    }
}
