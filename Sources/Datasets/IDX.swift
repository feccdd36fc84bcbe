// The IDX file format (LeCun's MNIST format), raw or gzip-compressed, read through zlib.
//
// Layout: magic (2 zero bytes, a type byte, a rank byte), then `rank` big-endian UInt32
// dimensions, then the data. Only unsigned bytes (type 0x08) are accepted: that is what
// MNIST and Fashion-MNIST use.
import CZlib
import Foundation

public struct DataError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct IDXArray {
    public let dimensions: [Int]
    public let bytes: [UInt8]
}

/// Reads a whole file, decompressing it when it is gzip (zlib reads plain files unchanged).
/// `declaredSize`, given the bytes read so far, returns the size the data's own header
/// declares once it can tell: reading stops one byte past it, so a small compressed file cannot
/// expand into gigabytes (a gzip bomb) before its header is checked.
public func readPossiblyCompressed(_ path: String, declaredSize: (([UInt8]) -> Int?)? = nil) throws -> [UInt8] {
    guard FileManager.default.fileExists(atPath: path) else {
        throw DataError("\(path): file not found")
    }
    guard let file = gzopen(path, "rb") else { throw DataError("\(path): cannot open (\(String(cString: strerror(errno))))") }
    defer { gzclose(file) }
    var out = [UInt8]()
    var limit: Int?
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = chunk.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
        if n < 0 {
            var code: Int32 = 0
            let message = String(cString: gzerror(file, &code))
            throw DataError("\(path): corrupt or truncated compressed data (\(message))")
        }
        if n == 0 { break }
        out.append(contentsOf: chunk[0..<Int(n)])
        if limit == nil { limit = declaredSize?(out) }
        if let limit, out.count > limit {
            out.removeLast(out.count - limit - 1)   // one byte over: the parser reports "too long"
            return out
        }
    }
    // zlib stops quietly at a truncated gzip stream; gzerror reports it.
    var code: Int32 = 0
    let message = gzerror(file, &code)
    if code != Z_OK && code != Z_STREAM_END {
        throw DataError("\(path): corrupt or truncated compressed data (\(message.map { String(cString: $0) } ?? "zlib error \(code)"))")
    }
    return out
}

/// Reads, parses and validates an IDX file of unsigned bytes with the expected rank.
public func readIDX(_ path: String, expectedRank: Int) throws -> IDXArray {
    try parseIDX(try readPossiblyCompressed(path, declaredSize: idxDeclaredSize), path: path, expectedRank: expectedRank)
}

/// The size an IDX header declares (header and data), once the header has been read; nil
/// before that, or when the header is not an IDX one (the parser then names what is wrong).
func idxDeclaredSize(_ data: [UInt8]) -> Int? {
    guard data.count >= 4, data[0] == 0, data[1] == 0 else { return nil }
    let rank = Int(data[3]), header = 4 + 4 * rank
    guard data.count >= header else { return nil }
    var size = 1
    for d in 0..<rank {
        let o = 4 + 4 * d
        let (product, overflow) = size.multipliedReportingOverflow(by: Int(data[o]) << 24 | Int(data[o + 1]) << 16 | Int(data[o + 2]) << 8 | Int(data[o + 3]))
        guard !overflow else { return nil }
        size = product
    }
    let (total, overflow) = size.addingReportingOverflow(header)
    return overflow ? nil : total
}

/// Parses and validates IDX bytes (unsigned bytes, the expected rank); `path` names them in errors.
public func parseIDX(_ data: [UInt8], path: String, expectedRank: Int) throws -> IDXArray {
    guard data.count >= 4 else {
        throw DataError("\(path): truncated IDX file (\(data.count) bytes, expected at least a 4-byte header)")
    }
    guard data[0] == 0, data[1] == 0, data[2] == 0x08 else {
        let magic = data[0..<4].map { String(format: "%02x", $0) }.joined()
        throw DataError("\(path): wrong magic number 0x\(magic); expected an IDX file of unsigned bytes (0x000008..)")
    }
    let rank = Int(data[3])
    guard rank == expectedRank else {
        throw DataError("\(path): IDX rank \(rank), expected \(expectedRank) (\(expectedRank == 1 ? "labels" : "images"))")
    }
    let headerSize = 4 + 4 * rank
    guard data.count >= headerSize else {
        throw DataError("\(path): truncated IDX header (\(data.count) bytes, expected \(headerSize))")
    }
    var dims = [Int]()
    for d in 0..<rank {
        let o = 4 + 4 * d
        dims.append(Int(data[o]) << 24 | Int(data[o + 1]) << 16 | Int(data[o + 2]) << 8 | Int(data[o + 3]))
    }
    // Four 32-bit dimensions can overflow Int: a product beyond the data is an error anyway.
    var expected = 1
    for d in dims {
        let (product, overflow) = expected.multipliedReportingOverflow(by: d)
        guard !overflow else {
            throw DataError("\(path): IDX dimensions \(dims) describe more data than any file holds")
        }
        expected = product
    }
    guard data.count - headerSize == expected else {
        let what = data.count - headerSize < expected ? "truncated" : "too long"
        throw DataError("\(path): \(what) IDX data: \(data.count - headerSize) bytes after the header, expected \(expected) for dimensions \(dims)")
    }
    return IDXArray(dimensions: dims, bytes: Array(data[headerSize...]))
}
