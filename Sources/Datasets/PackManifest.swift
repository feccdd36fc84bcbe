// The packed data format (`lockstep pack`, `data.format: packed`): its manifest and the layout of
// a shard file. docs/packed-format.md is the specification; this file and PackedShards.swift
// are its only readers and PackWriter.swift its only writer.
//
// A shard (little-endian):
//   0   8 bytes  magic "LSPACK" 0x00 0x01
//   8   u32      bytes per record
//   12  u32      record type: 0 = bytes (pixels), 1 = float32 (features)
//   16  u64      global index of the first record
//   24  u64      records in this shard
//   32           the records, back to back, fixed size
//   ...          the index: per record an i32 label and the u32 CRC-32 of its bytes
// The manifest (manifest.json) names the shards of each split with their sizes and CRC-32s.
import CZlib
import Foundation

public struct PackManifest: Codable, Equatable, Sendable {
    public static let fileName = "manifest.json"
    public static let magic: [UInt8] = Array("LSPACK".utf8) + [0, 1]
    public static let headerBytes = 32
    /// Bytes of index per record: label and checksum.
    public static let indexBytes = 8

    public enum RecordType: String, Codable, Sendable { case bytes, float32 }

    public struct Shard: Codable, Equatable, Sendable {
        public var file: String
        public var first: Int
        public var count: Int
        public var bytes: Int
        public var crc32: UInt32
        public init(file: String, first: Int, count: Int, bytes: Int, crc32: UInt32) {
            (self.file, self.first, self.count, self.bytes, self.crc32) = (file, first, count, bytes, crc32)
        }
    }

    public struct Split: Codable, Equatable, Sendable {
        public var count: Int
        public var classCounts: [Int]
        public var shards: [Shard]
        public init(count: Int, classCounts: [Int], shards: [Shard]) { (self.count, self.classCounts, self.shards) = (count, classCounts, shards) }
    }

    public var format = "lockstep-packed"
    public var version = 1
    public var recordType: RecordType
    public var classes: Int
    public var classNames: [String]?
    /// What a model sees, (C, H, W); `storedShape` is what a record holds: the same, or a larger
    /// square (C, R, R) that samples are cut from (centre or random resized crop).
    public var sampleShape: [Int]
    public var storedShape: [Int]
    /// How records become model inputs, as checkpoints store it (InputNormalization.metadata).
    public var normalization: [String: String]
    /// Per-channel mean and standard deviation of the training records (bytes / 255), for
    /// information and for tools; training uses `normalization`.
    public var channelMean: [Double]
    public var channelStd: [Double]
    public var splits: [String: Split]

    public init(recordType: RecordType, classes: Int, classNames: [String]?, sampleShape: [Int], storedShape: [Int],
                normalization: [String: String], channelMean: [Double], channelStd: [Double], splits: [String: Split]) {
        (self.recordType, self.classes, self.classNames, self.sampleShape, self.storedShape) = (recordType, classes, classNames, sampleShape, storedShape)
        (self.normalization, self.channelMean, self.channelStd, self.splits) = (normalization, channelMean, channelStd, splits)
    }

    /// Bytes per record.
    public var recordBytes: Int { storedShape.reduce(1, *) * (recordType == .bytes ? 1 : 4) }

    public static func path(_ directory: String) -> String { (directory as NSString).appendingPathComponent(fileName) }

    /// Reads and checks `directory`/manifest.json; errors name the file and what is wrong.
    public static func read(_ directory: String) throws -> PackManifest {
        let file = path(directory)
        guard let data = FileManager.default.contents(atPath: file) else {
            throw DataError("\(file): missing; a packed data set is a directory written by 'lockstep pack'")
        }
        let m: PackManifest
        do {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            m = try decoder.decode(PackManifest.self, from: data)
        } catch {
            throw DataError("\(file): not a packed-data manifest (\(describe(error)))")
        }
        guard m.format == "lockstep-packed", m.version == 1 else {
            throw DataError("\(file): format '\(m.format)' version \(m.version); this Lockstep reads lockstep-packed version 1")
        }
        guard m.sampleShape.count == 3, m.storedShape.count == 3, m.sampleShape.allSatisfy({ $0 > 0 }), m.storedShape[0] == m.sampleShape[0],
              m.storedShape[1] >= m.sampleShape[1], m.storedShape[2] >= m.sampleShape[2], m.classes >= 2 else {
            throw DataError("\(file): inconsistent shapes or classes (sample \(m.sampleShape), stored \(m.storedShape), \(m.classes) classes)")
        }
        for (name, split) in m.splits {
            var next = 0
            for shard in split.shards {
                guard shard.first == next, shard.count > 0, !shard.file.contains("/"),
                      shard.bytes == headerBytes + shard.count * (m.recordBytes + indexBytes) else {
                    throw DataError("\(file): split '\(name)' shard '\(shard.file)' does not follow the one before it or has the wrong size")
                }
                next += shard.count
            }
            guard next == split.count, split.classCounts.count == m.classes, split.classCounts.reduce(0, +) == split.count else {
                throw DataError("\(file): split '\(name)' counts \(split.count) samples but its shards and class counts do not add up to it")
            }
        }
        return m
    }

    public func write(_ directory: String) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let file = PackManifest.path(directory)
        let temporary = file + ".partial"
        try encoder.encode(self).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, file) == 0 else { throw DataError("\(file): cannot write (\(String(cString: strerror(errno))))") }
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "missing key '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "wrong type at '\(c.codingPath.map(\.stringValue).joined(separator: "."))'"
        case DecodingError.dataCorrupted(let c): return c.debugDescription
        default: return "\(error)"
        }
    }
}

/// CRC-32 (zlib's polynomial) of `count` bytes, continuing from `crc`.
@inline(__always)
func packCRC(_ crc: UInt32, _ bytes: UnsafeRawPointer, _ count: Int) -> UInt32 {
    UInt32(crc32(UInt(crc), bytes.assumingMemoryBound(to: UInt8.self), UInt32(count)))
}
