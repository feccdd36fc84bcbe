// Binary PGM (P5) images with a maximum value of 255: the header's width, height and maxval
// (comments allowed), then width·height bytes. Errors name the file.
import Foundation

public struct GreyImage: Sendable {
    public var width: Int, height: Int
    public var pixels: [UInt8]
}

public func parsePGM(_ bytes: [UInt8], path: String) throws -> GreyImage {
    guard bytes.count > 2, bytes[0] == UInt8(ascii: "P"), bytes[1] == UInt8(ascii: "5") else {
        throw DataError("\(path): not a binary PGM (expected the 'P5' magic)")
    }
    var fields: [Int] = [], i = 2
    while fields.count < 3 && i < bytes.count {
        if bytes[i] == UInt8(ascii: "#") {
            while i < bytes.count && bytes[i] != 10 { i += 1 }
            continue
        }
        if bytes[i] >= 48 && bytes[i] <= 57 {
            var v = 0
            while i < bytes.count, bytes[i] >= 48, bytes[i] <= 57 {
                guard v < 1_000_000 else { throw DataError("\(path): PGM header number too large") }
                v = v * 10 + Int(bytes[i] - 48)
                i += 1
            }
            fields.append(v)
            continue
        }
        guard bytes[i] == 32 || (bytes[i] >= 9 && bytes[i] <= 13) else {
            throw DataError("\(path): PGM header holds byte \(bytes[i]) where a number or white space belongs")
        }
        i += 1
    }
    guard fields.count == 3, fields[2] == 255, fields[0] > 0, fields[1] > 0 else {
        throw DataError("\(path): PGM header is not 'P5 width height 255'")
    }
    // One white-space byte ends the header.
    let start = i + 1, count = fields[0] * fields[1]
    guard start <= bytes.count, bytes.count - start >= count else {
        throw DataError("\(path): \(max(0, bytes.count - start)) pixel bytes, expected \(count) (truncated)")
    }
    return GreyImage(width: fields[0], height: fields[1], pixels: Array(bytes[start..<(start + count)]))
}
