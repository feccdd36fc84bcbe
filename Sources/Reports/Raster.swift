// An RGB pixel canvas with rectangles, lines and 5×7 bitmap text, written as PNG (zlib from the
// system for the compressed image data and the CRCs). Enough to make a chart readable without
// any image library.
import CZlib
import Foundation

public struct ImageError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct Raster: Sendable {
    public let width: Int
    public let height: Int
    public private(set) var pixels: [UInt8]   // RGB, row by row

    public init(width: Int, height: Int, background: RGB) {
        precondition(width > 0 && height > 0)
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        fill(x0: 0, y0: 0, x1: width, y1: height, background)
    }

    public func pixel(_ x: Int, _ y: Int) -> RGB {
        let i = (y * width + x) * 3
        return RGB(pixels[i], pixels[i + 1], pixels[i + 2])
    }

    public mutating func set(_ x: Int, _ y: Int, _ c: RGB) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = (y * width + x) * 3
        pixels[i] = c.r; pixels[i + 1] = c.g; pixels[i + 2] = c.b
    }

    /// Fills [x0, x1) × [y0, y1), clipped to the canvas.
    public mutating func fill(x0: Int, y0: Int, x1: Int, y1: Int, _ c: RGB) {
        for y in max(0, y0)..<max(max(0, y0), min(height, y1)) {
            for x in max(0, x0)..<max(max(0, x0), min(width, x1)) { set(x, y, c) }
        }
    }

    /// A line `width` pixels thick (a square pen stepped along it); dashed draws 6 on, 4 off.
    public mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, _ c: RGB, width: Int, dashed: Bool) {
        let steps = max(1, Int(max(abs(x2 - x1), abs(y2 - y1)).rounded(.up)))
        let length = ((x2 - x1) * (x2 - x1) + (y2 - y1) * (y2 - y1)).squareRoot()
        let half = (width - 1) / 2
        for i in 0...steps {
            let t = Double(i) / Double(steps)
            if dashed, (t * length).truncatingRemainder(dividingBy: 10) >= 6 { continue }
            let x = Int((x1 + t * (x2 - x1)).rounded()), y = Int((y1 + t * (y2 - y1)).rounded())
            fill(x0: x - half, y0: y - half, x1: x - half + width, y1: y - half + width, c)
        }
    }

    /// Draws `string` in capitals with the 5×7 font, each font pixel `scale` pixels square, its
    /// baseline at y. Characters the font lacks are drawn as a box.
    public mutating func text(_ string: String, x: Double, y: Double, scale: Int, anchor: TextAnchor, _ c: RGB) {
        let glyphs = string.uppercased().map { Self.font[$0] ?? Self.box }
        let advance = 6 * scale
        let total = glyphs.count * advance - scale
        var left = Int(x.rounded())
        switch anchor {
        case .start: break
        case .middle: left -= total / 2
        case .end: left -= total
        }
        let top = Int(y.rounded()) - 7 * scale
        for (n, rows) in glyphs.enumerated() {
            for (row, bits) in rows.enumerated() {
                for col in 0..<5 where bits & (0x10 >> UInt8(col)) != 0 {
                    let px = left + n * advance + col * scale, py = top + row * scale
                    fill(x0: px, y0: py, x1: px + scale, y1: py + scale, c)
                }
            }
        }
    }

    /// The width in pixels that `text` gives a string.
    public static func textWidth(_ string: String, scale: Int) -> Int { max(0, string.count * 6 * scale - scale) }

    /// The image as a PNG file: 8-bit RGB, no interlace, filter type 0 on every row.
    public func png() throws -> [UInt8] {
        var raw = [UInt8]()
        raw.reserveCapacity(height * (1 + width * 3))
        for y in 0..<height {
            raw.append(0)
            raw.append(contentsOf: pixels[(y * width * 3)..<((y + 1) * width * 3)])
        }
        var size = compressBound(uLong(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(size))
        let status = compress2(&compressed, &size, raw, uLong(raw.count), 9)
        guard status == Z_OK else { throw ImageError("PNG: zlib compress2 failed with status \(status)") }
        compressed.removeSubrange(Int(size)...)

        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
        func chunk(_ type: String, _ data: [UInt8]) {
            let body = Array(type.utf8) + data
            out += be32(data.count) + body
            out += be32(Int(crc32(0, body, uInt(body.count))))
        }
        chunk("IHDR", be32(width) + be32(height) + [8, 2, 0, 0, 0])
        chunk("IDAT", compressed)
        chunk("IEND", [])
        return out
    }

    static let box: [UInt8] = [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F]

    /// 5×7 glyphs (rows top to bottom, bit 4 the leftmost column), after the HD44780 LCD font.
    static let font: [Character: [UInt8]] = [
        " ": [0, 0, 0, 0, 0, 0, 0],
        "0": [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E], "1": [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        "2": [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F], "3": [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        "4": [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02], "5": [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        "6": [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E], "7": [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        "8": [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E], "9": [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        "A": [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11], "B": [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        "C": [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E], "D": [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        "E": [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F], "F": [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        "G": [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F], "H": [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        "I": [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E], "J": [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        "K": [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11], "L": [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        "M": [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11], "N": [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        "O": [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E], "P": [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        "Q": [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D], "R": [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        "S": [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E], "T": [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        "U": [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E], "V": [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        "W": [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A], "X": [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        "Y": [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04], "Z": [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ".": [0, 0, 0, 0, 0, 0x0C, 0x0C], ",": [0, 0, 0, 0, 0x0C, 0x04, 0x08], ":": [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0], ";": [0, 0x0C, 0x0C, 0, 0x0C, 0x04, 0x08],
        "%": [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03], "(": [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ")": [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08], "-": [0, 0, 0, 0x1F, 0, 0, 0], "+": [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        "=": [0, 0, 0x1F, 0, 0x1F, 0, 0], "/": [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0], "_": [0, 0, 0, 0, 0, 0, 0x1F],
        "'": [0x0C, 0x04, 0x08, 0, 0, 0, 0], "<": [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        ">": [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08], "[": [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        "]": [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E], "#": [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        "×": [0, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0], "−": [0, 0, 0, 0x1F, 0, 0, 0],
    ]
}
