// Packed data in training: `lockstep pack` (any config's splits into shards, with the
// normalisation statistics and class counts in the manifest) and `data.format: packed` (the
// shards opened per process and read a record at a time). Packing stores the bytes a sample is
// cut from, and the statistics the source format would have computed, so a run from packed
// shards has the bits of a run from the source.
import Collectives
import Configuration
import Datasets
import Foundation

/// What `pack` wrote, for its summary.
public struct PackSummary: Sendable {
    public var manifest: PackManifest
    public var bytes: Int
}

extension TrainingData {
    /// data.format: packed, from `data.path` (a directory `lockstep pack` wrote).
    static func loadPacked(_ config: TrainingConfig) throws -> TrainingData {
        let d = config.data
        let m = try PackManifest.read(d.path)
        let file = PackManifest.path(d.path)
        guard m.classes == d.classes else {
            throw DataError("\(file): the packed set has \(m.classes) classes but data.classes is \(d.classes); set data.classes: \(m.classes)")
        }
        if let names = d.classNames, let packed = m.classNames, names != packed {
            throw DataError("\(file): the packed set's classes are \(packed) but data.class_names is \(names)")
        }
        let actual = ["channels": m.storedShape[0], "image_size": m.sampleShape[1], "resize": m.storedShape[1]]
        for (key, value) in d.packedExpects.sorted(by: { $0.key < $1.key }) where actual[key] != value && !(key == "resize" && value == 0 && m.storedShape == m.sampleShape) {
            throw DataError("\(file): the packed records are \(m.storedShape.map(String.init).joined(separator: "×")) cut to \(m.sampleShape.map(String.init).joined(separator: "×")), but data.\(key) is \(value) (\(actual[key]!) in the pack); pack again with this config, or drop the key")
        }
        guard let stored = InputNormalization(metadata: m.normalization) else {
            throw DataError("\(file): 'normalization' is not one this Lockstep reads")
        }
        if !d.augment.isIdentity && m.recordType != .bytes {
            throw ConfigError("\(file): the packed set holds feature vectors; 'data.augment' applies to images")
        }
        var normalization = stored
        if case let .pixels(mean, std) = stored {
            normalization = .pixels(mean: d.mean.map(Float.init) ?? mean, std: d.std.map(Float.init) ?? std)
        }
        func split(_ name: String) throws -> ImageDataset {
            let source = try PackedSplit(directory: d.path, manifest: m, split: name)
            var mean: Float?, std: Float?
            if case let .pixels(m, s) = normalization { (mean, std) = (m, s) }
            return ImageDataset(name: name, sampleShape: m.sampleShape, storedShape: m.storedShape, classes: m.classes,
                                source: source, labels: source.labels, mean: mean, std: std)
        }
        var padValue: Float = 0
        if case let .pixels(mean, std) = normalization { padValue = (0 - mean) / std }
        var data = TrainingData(train: try split(d.trainSplit), test: try split(d.testSplit), padValue: padValue, normalization: normalization)
        data.classNames = m.classNames
        return data
    }

    /// Rank 0's line on what each process read from the shards (nil on other ranks); every rank
    /// must call it (one all-reduce). Simulated ranks share one process and one count.
    public func packedReadReport(_ comm: Communicator) throws -> String? {
        var perRank = [Double](repeating: 0, count: comm.size)
        perRank[comm.rank] = Double(packedBytesRead)
        try comm.allReduce(&perRank)
        guard comm.rank == 0 else { return nil }
        let set = [train, test].compactMap { $0.source as? PackedSplit }.reduce(0) { $0 + Double($1.count * $1.recordBytes) }
        let each = perRank.map { String(format: "%.1f", $0 / 1e6) }.joined(separator: ", ")
        return String(format: "lockstep: packed records read per process: %@ MB (the set's records: %.1f MB)", each, set / 1e6)
    }

    /// Record bytes this process read from packed shards (0 for other data).
    public var packedBytesRead: Int {
        [train, test].compactMap { $0.source as? PackedSplit }.reduce(0) { $0 + $1.bytesRead }
    }
}

public enum Packer {
    /// Writes the splits of `config`'s data into `output` (a new or empty directory) as packed
    /// shards of at most `shardBytes` each; `progress` sees (records done, records in all).
    public static func pack(_ config: TrainingConfig, output: String, shardBytes: Int = 256 << 20,
                            progress: (Int, Int) -> Void = { _, _ in }) throws -> PackSummary {
        if FileManager.default.fileExists(atPath: PackManifest.path(output)) {
            throw DataError("\(output): already holds a packed set (manifest.json); pack into a new directory")
        }
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let data = try TrainingData.load(config)
        let d = config.data
        // The set's splits are always named train and test, whatever the source called them.
        let splits = [("train", data.train), ("test", data.test)]
        let bytes = data.train.storesBytes
        let recordBytes = data.train.storedShape.reduce(1, *) * (bytes ? 1 : 4)
        let total = splits.reduce(0) { $0 + $1.1.count }
        var done = 0, written: [String: PackManifest.Split] = [:]
        var channels = ChannelStatistics(channels: data.train.storedShape[0])
        for (name, dataset) in splits {
            let writer = PackWriter(directory: output, split: name, recordBytes: recordBytes, recordType: bytes ? .bytes : .float32,
                                    total: dataset.count, perShard: max(1, shardBytes / (recordBytes + PackManifest.indexBytes)), classes: d.classes)
            for i in 0..<dataset.count {
                var failure: Error?
                dataset.withStoredSample(i) { raw in
                    if bytes && name == "train" { channels.add(raw) }
                    do { try writer.append(raw.baseAddress!, label: dataset.labels[i]) } catch { failure = error }
                }
                if let failure { throw failure }
                if let message = dataset.takeFailure() { throw DataError(message) }
                done += 1
                progress(done, total)
            }
            written[name] = try writer.finish()
        }
        let (mean, std) = channels.result
        let manifest = PackManifest(recordType: bytes ? .bytes : .float32, classes: d.classes, classNames: data.classNames ?? d.classNames,
                                    sampleShape: data.train.sampleShape, storedShape: data.train.storedShape,
                                    normalization: data.normalization.metadata, channelMean: mean, channelStd: std, splits: written)
        try manifest.write(output)
        return PackSummary(manifest: manifest, bytes: written.values.flatMap(\.shards).reduce(0) { $0 + $1.bytes })
    }
}

/// Per-channel mean and standard deviation of byte pixels (as b/255) over (C, R, R) records.
struct ChannelStatistics {
    var sums: [Double], squares: [Double], count = 0
    init(channels: Int) { sums = [Double](repeating: 0, count: channels); squares = sums }

    mutating func add(_ record: UnsafeRawBufferPointer) {
        let plane = record.count / sums.count
        for c in 0..<sums.count {
            var s = 0, q = 0
            for p in record[(c * plane)..<((c + 1) * plane)] { s += Int(p); q += Int(p) * Int(p) }
            sums[c] += Double(s) / 255
            squares[c] += Double(q) / (255 * 255)
        }
        count += plane
    }

    var result: ([Double], [Double]) {
        let n = Double(max(count, 1))
        let mean = sums.map { $0 / n }
        return (mean, zip(squares, mean).map { max($0 / n - $1 * $1, 0).squareRoot() })
    }
}
