// Writing packed shards (`lockstep pack`): a split's records, in global index order, into shard
// files of a fixed number of records, each with its index (label, CRC-32 per record) at the
// end and its whole-file CRC-32 for the manifest. A shard is written under a `.partial` name
// and renamed when complete, so a pack that stops half-way leaves no shard that looks whole.
import Foundation

public final class PackWriter {
    public let directory: String
    public let split: String
    public let recordBytes: Int
    public let recordType: PackManifest.RecordType
    public let total: Int
    public let perShard: Int
    let classes: Int
    private var shards: [PackManifest.Shard] = []
    private var classCounts: [Int]
    private var written = 0
    private var file: UnsafeMutablePointer<FILE>?
    private var path = ""
    private var crc: UInt32 = 0
    private var index: [UInt8] = []

    /// `total` records of `recordBytes` each will follow; at most `perShard` go in one shard.
    public init(directory: String, split: String, recordBytes: Int, recordType: PackManifest.RecordType,
                total: Int, perShard: Int, classes: Int) {
        (self.directory, self.split, self.recordBytes, self.recordType) = (directory, split, recordBytes, recordType)
        (self.total, self.perShard, self.classes) = (total, max(1, perShard), classes)
        classCounts = [Int](repeating: 0, count: classes)
    }

    deinit { if let file { fclose(file); unlink(path + ".partial") } }

    /// The shard file name of shard `k` of `split`.
    public static func shardName(_ split: String, _ k: Int) -> String { String(format: "%@-%05d.lsp", split, k) }

    /// Appends the next record (`recordBytes` bytes) with its label.
    public func append(_ record: UnsafeRawPointer, label: Int32) throws {
        precondition(written < total, "PackWriter: more records than the \(total) announced")
        precondition(label >= 0 && Int(label) < classes, "PackWriter: label \(label) outside 0..<\(classes)")
        if file == nil { try openShard() }
        try put(record, recordBytes)
        let recordCRC = packCRC(0, record, recordBytes)
        index += withUnsafeBytes(of: label.littleEndian, Array.init) + withUnsafeBytes(of: recordCRC.littleEndian, Array.init)
        classCounts[Int(label)] += 1
        written += 1
        if index.count / PackManifest.indexBytes == shardCount(shards.count) { try closeShard() }
    }

    /// The split as the manifest lists it, once every announced record was appended.
    public func finish() throws -> PackManifest.Split {
        precondition(written == total && file == nil, "PackWriter: \(written) of \(total) records written")
        return PackManifest.Split(count: total, classCounts: classCounts, shards: shards)
    }

    private func shardCount(_ k: Int) -> Int { min(perShard, total - k * perShard) }

    private func openShard() throws {
        let name = PackWriter.shardName(split, shards.count)
        path = (directory as NSString).appendingPathComponent(name)
        guard let f = fopen(path + ".partial", "wb") else { throw DataError("\(path): cannot create (\(String(cString: strerror(errno))))") }
        file = f
        crc = 0
        index.removeAll(keepingCapacity: true)
        let header = PackManifest.magic + le32(recordBytes) + le32(recordType == .bytes ? 0 : 1) + le64(written) + le64(shardCount(shards.count))
        try put(header, header.count)
    }

    private func put(_ bytes: UnsafeRawPointer, _ count: Int) throws {
        guard fwrite(bytes, 1, count, file) == count else { throw DataError("\(path): write failed (\(String(cString: strerror(errno)))): disk full?") }
        crc = packCRC(crc, bytes, count)
    }

    private func closeShard() throws {
        try put(index, index.count)
        let count = index.count / PackManifest.indexBytes
        let ok = fflush(file) == 0 && fsync(fileno(file)) == 0
        fclose(file)
        file = nil
        guard ok, rename(path + ".partial", path) == 0 else { throw DataError("\(path): cannot finish (\(String(cString: strerror(errno))))") }
        shards.append(PackManifest.Shard(file: (path as NSString).lastPathComponent, first: written - count, count: count,
                                         bytes: PackManifest.headerBytes + count * (recordBytes + PackManifest.indexBytes), crc32: crc))
    }
}
