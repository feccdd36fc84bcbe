// Reading packed shards (data.format: packed): a split's shard files opened once, their index
// (labels and per-record CRC-32s) read at start, and each record `pread` when a sample is used,
// so a rank reads only the records it takes and holds no pixels. A record whose bytes do not
// match its checksum, or a shard cut short, is an error naming the file and the record;
// `verify` checks every byte against the manifest (`lockstep pack --verify`).
import CZlib
import Foundation

/// Where streamed samples come from: image files or packed records. `withSample` hands `body`
/// sample `index`'s stored bytes; it is called from several threads at once (ranks, prefetch).
/// A failure reads as zeros and waits in `takeFailure` for the loader to throw.
public protocol SampleSource: AnyObject, Sendable {
    func withSample(_ index: Int, _ body: (UnsafeRawPointer) -> Void)
    func takeFailure() -> String?
    /// Bytes this source holds in memory.
    var residentBytes: Int { get }
}

public final class PackedSplit: SampleSource, @unchecked Sendable {
    public let directory: String
    public let name: String
    public let manifest: PackManifest
    public let labels: [Int32]
    let checksums: [UInt32]
    let descriptors: [Int32]
    let files: [String]
    let perShard: Int
    public let recordBytes: Int
    private let lock = NSLock()
    private var failure: String?
    private var readBytes = 0

    /// Opens `split` of the packed set in `directory`; a missing, short or foreign shard, or a
    /// label out of range, is an error naming the shard file.
    public init(directory: String, manifest: PackManifest, split: String) throws {
        guard let s = manifest.splits[split] else {
            throw DataError("\(PackManifest.path(directory)): no split '\(split)' (it has \(manifest.splits.keys.sorted().joined(separator: ", ")))")
        }
        (self.directory, self.name, self.manifest) = (directory, split, manifest)
        recordBytes = manifest.recordBytes
        perShard = s.shards.first?.count ?? 1
        var labels = [Int32](), checksums = [UInt32](), descriptors = [Int32](), files = [String]()
        labels.reserveCapacity(s.count)
        checksums.reserveCapacity(s.count)
        defer { if descriptors.count < s.shards.count { descriptors.forEach { close($0) } } }
        for (k, shard) in s.shards.enumerated() {
            let file = (directory as NSString).appendingPathComponent(shard.file)
            guard k == s.shards.count - 1 || shard.count == perShard else {
                throw DataError("\(file): \(shard.count) records; every shard but the last holds \(perShard)")
            }
            let fd = open(file, O_RDONLY)
            guard fd >= 0 else { throw DataError("\(file): cannot open (\(String(cString: strerror(errno)))); the manifest lists it") }
            descriptors.append(fd)
            var info = stat()
            fstat(fd, &info)
            guard Int(info.st_size) == shard.bytes else {
                throw DataError("\(file): \(info.st_size) bytes, the manifest says \(shard.bytes) (truncated or replaced; run lockstep pack --verify)")
            }
            var header = [UInt8](repeating: 0, count: PackManifest.headerBytes)
            try readFully(fd, &header, at: 0, file: file)
            let expected = PackManifest.magic + le32(recordBytes) + le32(manifest.recordType == .bytes ? 0 : 1) + le64(shard.first) + le64(shard.count)
            guard header == expected else {
                throw DataError("\(file): its header does not match the manifest (not this set's shard, or corrupt; run lockstep pack --verify)")
            }
            var index = [UInt8](repeating: 0, count: shard.count * PackManifest.indexBytes)
            try readFully(fd, &index, at: PackManifest.headerBytes + shard.count * recordBytes, file: file)
            try index.withUnsafeBytes { raw in
                for r in 0..<shard.count {
                    let label = Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * r, as: Int32.self))
                    guard label >= 0 && Int(label) < manifest.classes else {
                        throw DataError("\(file): record \(r) has label \(label), outside 0..<\(manifest.classes) (corrupt; run lockstep pack --verify)")
                    }
                    labels.append(label)
                    checksums.append(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * r + 4, as: UInt32.self)))
                }
            }
            files.append(file)
        }
        (self.labels, self.checksums, self.descriptors, self.files) = (labels, checksums, descriptors, files)
    }

    deinit { descriptors.forEach { close($0) } }

    public var count: Int { labels.count }
    public var residentBytes: Int { labels.count * 8 + files.reduce(0) { $0 + $1.utf8.count } }
    /// Record bytes read since the set was opened (what this process took from the shards).
    public var bytesRead: Int { lock.lock(); defer { lock.unlock() }; return readBytes }

    public func withSample(_ index: Int, _ body: (UnsafeRawPointer) -> Void) {
        withUnsafeTemporaryAllocation(byteCount: recordBytes, alignment: 16) { buffer in
            let base = buffer.baseAddress!
            let shard = index / perShard, record = index - shard * perShard
            let offset = PackManifest.headerBytes + record * recordBytes
            var problem: String?
            var got = 0
            while got < recordBytes {
                let n = pread(descriptors[shard], base + got, recordBytes - got, off_t(offset + got))
                if n <= 0 { problem = "\(files[shard]): record \(record) (sample \(index)) cannot be read (\(n < 0 ? String(cString: strerror(errno)) : "end of file")): truncated after start-up?"; break }
                got += n
            }
            if problem == nil && packCRC(0, base, recordBytes) != checksums[index] {
                problem = "\(files[shard]): record \(record) (sample \(index)) fails its checksum: the shard is corrupt (run lockstep pack --verify)"
            }
            lock.lock()
            readBytes += got
            if let problem, failure == nil { failure = problem }
            lock.unlock()
            if problem != nil { memset(base, 0, recordBytes) }
            body(UnsafeRawPointer(base))
        }
    }

    public func takeFailure() -> String? {
        lock.lock(); defer { lock.unlock() }
        let f = failure
        failure = nil
        return f
    }

    /// Checks every shard of every split of the set in `directory` against the manifest: sizes,
    /// headers, each record's checksum and each file's CRC-32. Returns one line per problem
    /// (none for a sound set); `progress` sees bytes done of the total.
    public static func verify(_ directory: String, progress: (Int, Int) -> Void = { _, _ in }) throws -> [String] {
        let manifest = try PackManifest.read(directory)
        let total = manifest.splits.values.flatMap(\.shards).reduce(0) { $0 + $1.bytes }
        var done = 0, problems: [String] = []
        for split in manifest.splits.keys.sorted() {
            for shard in manifest.splits[split]!.shards {
                let file = (directory as NSString).appendingPathComponent(shard.file)
                problems += verifyShard(file, shard, manifest) { done += $0; progress(done, total) }
            }
        }
        return problems
    }

    /// One shard, streamed in blocks of whole records (memory does not grow with the shard).
    static func verifyShard(_ file: String, _ shard: PackManifest.Shard, _ m: PackManifest, advance: (Int) -> Void) -> [String] {
        let fd = open(file, O_RDONLY)
        guard fd >= 0 else { return ["\(file): missing or unreadable (\(String(cString: strerror(errno))))"] }
        defer { close(fd) }
        var info = stat()
        fstat(fd, &info)
        guard Int(info.st_size) == shard.bytes else { return ["\(file): \(info.st_size) bytes, the manifest says \(shard.bytes) (truncated or replaced)"] }
        var header = [UInt8](repeating: 0, count: PackManifest.headerBytes)
        var index = [UInt8](repeating: 0, count: shard.count * PackManifest.indexBytes)
        let indexStart = PackManifest.headerBytes + shard.count * m.recordBytes
        do {
            try readFully(fd, &header, at: 0, file: file)
            try readFully(fd, &index, at: indexStart, file: file)
        } catch { return ["\(error)"] }
        var problems: [String] = []
        let expected = PackManifest.magic + le32(m.recordBytes) + le32(m.recordType == .bytes ? 0 : 1) + le64(shard.first) + le64(shard.count)
        if header != expected { problems.append("\(file): its header does not match the manifest") }
        var crc = packCRC(0, header, header.count)
        let perBlock = max(1, (1 << 22) / m.recordBytes)
        var block = [UInt8](repeating: 0, count: perBlock * m.recordBytes)
        var bad = 0, firstBad = -1, r = 0
        while r < shard.count {
            let n = min(perBlock, shard.count - r)
            block.removeAll(keepingCapacity: true)
            block.append(contentsOf: repeatElement(0, count: n * m.recordBytes))
            do { try readFully(fd, &block, at: PackManifest.headerBytes + r * m.recordBytes, file: file) } catch { return problems + ["\(error)"] }
            block.withUnsafeBytes { raw in
                crc = packCRC(crc, raw.baseAddress!, raw.count)
                index.withUnsafeBytes { ix in
                    for k in 0..<n {
                        let stored = UInt32(littleEndian: ix.loadUnaligned(fromByteOffset: 8 * (r + k) + 4, as: UInt32.self))
                        if packCRC(0, raw.baseAddress! + k * m.recordBytes, m.recordBytes) != stored {
                            bad += 1
                            if firstBad < 0 { firstBad = r + k }
                        }
                    }
                }
            }
            advance(n * m.recordBytes)
            r += n
        }
        crc = packCRC(crc, index, index.count)
        advance(PackManifest.headerBytes + index.count)
        if bad > 0 { problems.append("\(file): \(bad) record(s) fail their checksums, the first is record \(firstBad) (sample \(shard.first + firstBad))") }
        if crc != shard.crc32 { problems.append("\(file): CRC-32 \(String(crc, radix: 16)), the manifest says \(String(shard.crc32, radix: 16))") }
        return problems
    }
}

func le32(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt32(v).littleEndian, Array.init) }
func le64(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt64(v).littleEndian, Array.init) }

func readFully(_ fd: Int32, _ buffer: inout [UInt8], at offset: Int, file: String) throws {
    let want = buffer.count
    let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, want, off_t(offset)) }
    guard got == want else { throw DataError("\(file): cannot read \(want) bytes at offset \(offset) (truncated; run lockstep pack --verify)") }
}
