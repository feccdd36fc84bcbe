// The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of
// JSON mapping tensor names to {dtype, shape, data_offsets: [begin, end]} (offsets relative to
// the data section) plus an optional "__metadata__" map of strings, then the raw data.
//
// The reader checks every offset and size against the file before touching data, so a corrupt
// or hostile file cannot make it read out of bounds.
import Foundation

public struct SafeTensorsError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct SafeTensorsFile {
    public struct Entry {
        public var name: String
        public var shape: [Int]
        public var range: Range<Int>   // byte range within the data section
    }
    public var metadata: [String: String]
    public var entries: [Entry]
    public let bytes: [UInt8]
    let dataStart: Int

    /// Serialises named float32 tensors and metadata.
    public static func encode(tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)],
                              metadata: [String: String]) throws -> [UInt8] {
        var out = try header(tensors: tensors.map { ($0.name, $0.shape, $0.values.count) }, metadata: metadata)
        out.reserveCapacity(out.count + tensors.reduce(0) { $0 + 4 * $1.values.count })
        for t in tensors {
            #if _endian(little)
            out.append(contentsOf: UnsafeRawBufferPointer(t.values))   // already little-endian: one copy
            #else
            for v in t.values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
            #endif
        }
        return out
    }

    /// The file's first bytes: the header's length, the JSON header (tensors in the order given,
    /// their data back to back) padded with spaces, as the format allows, so that the data
    /// starts at a multiple of `alignment` (8, or a page for direct writes) and at least
    /// `minimumLength` bytes in. The data follows as little-endian floats.
    public static func header(tensors: [(name: String, shape: [Int], count: Int)], metadata: [String: String],
                              alignment: Int = 8, minimumLength: Int = 0) throws -> [UInt8] {
        precondition(alignment > 0 && alignment % 8 == 0, "header alignment must be a positive multiple of 8")
        // Written by hand, keys sorted by their UTF-8 bytes: Foundation's JSONSerialization took
        // 3 ms for a checkpoint's 5.6 KB header, a checkpoint's largest cost on the step after the
        // copy of the state. The reader parses it with JSONSerialization (tested both ways).
        var entries: [(key: String, value: String)] = []
        var offset = 0
        for t in tensors {
            precondition(t.shape.reduce(1, *) == t.count, "\(t.name): shape \(t.shape) for \(t.count) values")
            let size = t.count * 4
            let shape = t.shape.map(String.init).joined(separator: ",")
            entries.append((t.name, "{\"data_offsets\":[\(offset),\(offset + size)],\"dtype\":\"F32\",\"shape\":[\(shape)]}"))
            offset += size
        }
        let meta = metadata.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            .map { jsonQuoted($0.key) + ":" + jsonQuoted($0.value) }.joined(separator: ",")
        entries.append(("__metadata__", "{" + meta + "}"))
        entries.sort { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
        for i in 1..<entries.count where entries[i].key == entries[i - 1].key {
            throw SafeTensorsError("two tensors named \(entries[i].key)")
        }
        var json = Array(("{" + entries.map { jsonQuoted($0.key) + ":" + $0.value }.joined(separator: ",") + "}").utf8)
        let length = max(8 + json.count, minimumLength)
        json.append(contentsOf: repeatElement(0x20, count: (length + alignment - 1) / alignment * alignment - 8 - json.count))
        var out = [UInt8]()
        out.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        return out
    }

    /// `s` as a JSON string literal: quotes, backslashes and control characters escaped.
    static func jsonQuoted(_ s: String) -> String {
        var s = s
        // Most strings (names, numbers) need no escapes: scan once and wrap them as they are.
        if s.withUTF8({ !$0.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C } }) { return "\"" + s + "\"" }
        var out = [UInt8]()
        out.reserveCapacity(s.utf8.count + s.utf8.count / 8 + 2)
        out.append(0x22)
        let hex = Array("0123456789abcdef".utf8)
        for b in s.utf8 {
            switch b {
            case 0x22, 0x5C: out.append(0x5C); out.append(b)
            case 0x0A: out.append(0x5C); out.append(0x6E)
            case 0x0D: out.append(0x5C); out.append(0x72)
            case 0x09: out.append(0x5C); out.append(0x74)
            case 0..<0x20:
                out.append(0x5C); out.append(0x75); out.append(0x30); out.append(0x30)
                out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)])
            default: out.append(b)
            }
        }
        out.append(0x22)
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses and validates a file's bytes; `path` names the file in errors.
    public init(bytes: [UInt8], path: String) throws {
        func fail(_ what: String) -> SafeTensorsError { SafeTensorsError("\(path): not a valid checkpoint: \(what)") }
        guard bytes.count >= 8 else { throw fail("\(bytes.count) bytes, shorter than the 8-byte header length (truncated?)") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard n >= 2, n <= 100_000_000, Int(n) <= bytes.count - 8 else {
            throw fail("header length \(n) does not fit in a file of \(bytes.count) bytes (truncated or corrupt)")
        }
        let headerBytes = Data(bytes[8..<(8 + Int(n))])
        guard let object = try? JSONSerialization.jsonObject(with: headerBytes), let header = object as? [String: Any] else {
            throw fail("the header is not a JSON object")
        }
        dataStart = 8 + Int(n)
        let dataSize = bytes.count - dataStart
        var meta: [String: String] = [:]
        if let m = header["__metadata__"] {
            guard let dict = m as? [String: String] else { throw fail("__metadata__ must map strings to strings") }
            meta = dict
        }
        var list: [Entry] = []
        for (name, value) in header where name != "__metadata__" {
            guard let info = value as? [String: Any] else { throw fail("entry '\(name)' is not an object") }
            guard let dtype = info["dtype"] as? String, dtype == "F32" else {
                throw fail("tensor '\(name)' has dtype \(info["dtype"] ?? "none"); only F32 is supported")
            }
            guard let shape = info["shape"] as? [Int], shape.allSatisfy({ $0 >= 0 }),
                  let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
                throw fail("tensor '\(name)' lacks a valid shape or data_offsets")
            }
            let (begin, end) = (offsets[0], offsets[1])
            let count = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue }
            guard begin >= 0, end >= begin, end <= dataSize else {
                throw fail("tensor '\(name)' claims bytes \(begin)..<\(end) but the data section has \(dataSize) bytes (truncated?)")
            }
            guard count <= Int.max / 4, end - begin == count * 4 else {
                throw fail("tensor '\(name)' of shape \(shape) needs \(count * 4) bytes but its offsets span \(end - begin)")
            }
            list.append(Entry(name: name, shape: shape, range: begin..<end))
        }
        list.sort { $0.range.lowerBound < $1.range.lowerBound || ($0.range.lowerBound == $1.range.lowerBound && $0.name < $1.name) }
        for i in 1..<max(list.count, 1) where list[i].range.lowerBound < list[i - 1].range.upperBound {
            throw fail("tensors '\(list[i - 1].name)' and '\(list[i].name)' overlap")
        }
        metadata = meta
        entries = list
        self.bytes = bytes
    }

    public static func read(path: String) throws -> SafeTensorsFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SafeTensorsError("\(path): cannot read the checkpoint (missing or unreadable)")
        }
        return try SafeTensorsFile(bytes: [UInt8](data), path: path)
    }

    public func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }

    /// Copies a tensor's values (validated at parse time) into `out`.
    public func copy(_ entry: Entry, into out: UnsafeMutablePointer<Float>) {
        bytes.withUnsafeBytes { raw in
            let base = raw.baseAddress! + dataStart + entry.range.lowerBound
            for i in 0..<(entry.range.count / 4) {
                out[i] = Float(bitPattern: UInt32(littleEndian: (base + 4 * i).loadUnaligned(as: UInt32.self)))
            }
        }
    }

    public func values(_ entry: Entry) -> [Float] {
        var v = [Float](repeating: 0, count: entry.range.count / 4)
        v.withUnsafeMutableBufferPointer { if !$0.isEmpty { copy(entry, into: $0.baseAddress!) } }
        return v
    }

    /// The same tensors, in the same order, with `changes` merged into the metadata.
    public func encoded(updatingMetadata changes: [String: String]) throws -> [UInt8] {
        let all = entries.map { values($0) }
        var tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] = []
        var buffers: [UnsafeMutableBufferPointer<Float>] = []
        defer { buffers.forEach { $0.deallocate() } }
        for (e, v) in zip(entries, all) {
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: v.count)
            _ = b.initialize(from: v)
            buffers.append(b)
            tensors.append((e.name, e.shape, UnsafeBufferPointer(b)))
        }
        return try Self.encode(tensors: tensors, metadata: metadata.merging(changes) { $1 })
    }
}

extension SafeTensorsFile {
    /// What `lockstep inspect` prints: the metadata, then name, shape, count, mean and std of
    /// every tensor.
    public func inspection(path: String) -> String {
        var lines = ["checkpoint \(path)"]
        for key in metadata.keys.sorted() where key != "config" { lines.append("  \(key): \(metadata[key]!)") }
        if let c = metadata["config"] { lines.append("  config: \(c.split(separator: "\n").count) lines (lockstep eval uses it)") }
        func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
        lines.append(pad("tensor", 48) + pad("shape", 16) + pad("     count", 11) + pad("          mean", 15) + "           std")
        for e in entries.sorted(by: { $0.name < $1.name }) {
            let v = values(e)
            let mean = v.reduce(0.0) { $0 + Double($1) } / Double(max(v.count, 1))
            let variance = v.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(max(v.count, 1))
            lines.append(pad(e.name, 48) + pad("\(e.shape)", 16) + String(format: "%10d %14.6g %14.6g", v.count, mean, variance.squareRoot()))
        }
        return lines.joined(separator: "\n")
    }
}
