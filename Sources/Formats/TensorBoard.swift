// TensorBoard event files: TFRecord framing (length, masked CRC-32C of the length, data,
// masked CRC-32C of the data) around `Event` protocol buffers with scalar summaries, encoded
// by hand (Event: wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5;
// Summary: repeated Value value = 1; Value: tag = 1, simple_value = 2 (float)).
import Foundation

public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? 0x82F6_3B78 ^ (c >> 1) : c >> 1 }
        return c
    }
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
    /// TFRecord's masking: rotate right by 15 and add a constant.
    public static func masked(_ bytes: [UInt8]) -> UInt32 {
        let c = checksum(bytes)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }
}

struct ProtoWriter {
    var bytes: [UInt8] = []
    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    mutating func tag(_ field: Int, _ wire: Int) { varint(UInt64(field << 3 | wire)) }
    mutating func double(_ field: Int, _ v: Double) {
        tag(field, 1); withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func float(_ field: Int, _ v: Float) {
        tag(field, 5); withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func int64(_ field: Int, _ v: Int64) { tag(field, 0); varint(UInt64(bitPattern: v)) }
    mutating func bytesField(_ field: Int, _ b: [UInt8]) { tag(field, 2); varint(UInt64(b.count)); bytes.append(contentsOf: b) }
    mutating func string(_ field: Int, _ s: String) { bytesField(field, Array(s.utf8)) }
}

public final class TensorBoardWriter {
    let handle: FileHandle
    public let path: String

    public init(directory: String) throws {
        let host = ProcessInfo.processInfo.hostName
        let base = (directory as NSString).appendingPathComponent("events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(host).\(getpid())")
        // A second run in the same process and second (a resume in tests) must not truncate the
        // first's file: a suffix keeps the names distinct and sorts after it, as TensorBoard reads.
        var name = base
        var n = 0
        while FileManager.default.fileExists(atPath: name) { n += 1; name = "\(base).\(n)" }
        path = name
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
            throw SafeTensorsError("\(path): cannot create the TensorBoard event file")
        }
        handle = h
        var e = ProtoWriter()
        e.double(1, Date().timeIntervalSince1970)
        e.string(3, "brain.Event:2")
        write(record: e.bytes)
    }

    deinit { try? handle.close() }

    func write(record data: [UInt8]) {
        var out = [UInt8]()
        let length = Array(withUnsafeBytes(of: UInt64(data.count).littleEndian) { Array($0) })
        out += length
        out += withUnsafeBytes(of: CRC32C.masked(length).littleEndian) { Array($0) }
        out += data
        out += withUnsafeBytes(of: CRC32C.masked(data).littleEndian) { Array($0) }
        handle.write(Data(out))
    }

    /// Writes scalars (tag → value) for one step.
    public func scalars(_ values: [(String, Double)], step: Int) {
        var summary = ProtoWriter()
        for (tag, value) in values {
            var v = ProtoWriter()
            v.string(1, tag)
            v.float(2, Float(value))
            summary.bytesField(1, v.bytes)
        }
        var e = ProtoWriter()
        e.double(1, Date().timeIntervalSince1970)
        e.int64(2, Int64(step))
        e.bytesField(5, summary.bytes)
        write(record: e.bytes)
        try? handle.synchronize()
    }
}
