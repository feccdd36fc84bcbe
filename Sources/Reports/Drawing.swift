// A figure as a list of shapes (rectangles, lines, text) in pixel coordinates, with two
// renderers: standalone SVG, and a raster that Raster.swift writes as PNG. One description gives
// both files, so the SVG and the PNG of a figure cannot disagree.
import Foundation

public struct RGB: Equatable, Sendable {
    public var r: UInt8, g: UInt8, b: UInt8
    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { self.r = r; self.g = g; self.b = b }
    /// From "#rrggbb".
    public init(hex: String) {
        let v = UInt32(hex.dropFirst(), radix: 16) ?? 0
        self.init(UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255))
    }
    public var hex: String { String(format: "#%02x%02x%02x", r, g, b) }
    public static let black = RGB(0, 0, 0), white = RGB(255, 255, 255), grey = RGB(150, 150, 150)
}

public enum TextAnchor: String, Sendable { case start, middle, end }

public enum Shape: Sendable {
    /// A filled rectangle with an optional outline (top-left corner, size).
    case rect(x: Double, y: Double, width: Double, height: Double, fill: RGB?, stroke: RGB?)
    case line(x1: Double, y1: Double, x2: Double, y2: Double, colour: RGB, width: Double, dashed: Bool)
    /// Text whose baseline starts, centres or ends at (x, y); `size` is the cap height in pixels.
    case text(x: Double, y: Double, string: String, size: Double, anchor: TextAnchor, colour: RGB)
}

public struct Drawing: Sendable {
    public var width: Int
    public var height: Int
    public var shapes: [Shape] = []
    public init(width: Int, height: Int) { self.width = width; self.height = height }

    public mutating func add(_ shape: Shape) { shapes.append(shape) }

    public func svg() -> String {
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" font-family=\"sans-serif\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        for shape in shapes {
            switch shape {
            case let .rect(x, y, w, h, fill, stroke):
                s += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(w))\" height=\"\(f(h))\" fill=\"\(fill?.hex ?? "none")\""
                s += stroke.map { " stroke=\"\($0.hex)\"" } ?? ""
                s += "/>\n"
            case let .line(x1, y1, x2, y2, colour, width, dashed):
                s += "<line x1=\"\(f(x1))\" y1=\"\(f(y1))\" x2=\"\(f(x2))\" y2=\"\(f(y2))\" stroke=\"\(colour.hex)\" stroke-width=\"\(f(width))\""
                s += dashed ? " stroke-dasharray=\"6 4\"/>\n" : "/>\n"
            case let .text(x, y, string, size, anchor, colour):
                // SVG sizes fonts by their em box; a sans-serif cap height is about 0.7 em.
                s += "<text x=\"\(f(x))\" y=\"\(f(y))\" font-size=\"\(f(size / 0.7))\" text-anchor=\"\(anchor.rawValue)\" fill=\"\(colour.hex)\">"
                s += LineChart.escape(string) + "</text>\n"
            }
        }
        return s + "</svg>\n"
    }

    /// The figure rasterised at its own size: lines are drawn with whole-pixel widths and text
    /// with a 5×7 bitmap font (capitals) scaled by a whole factor, size/7 rounded down.
    public func raster() -> Raster {
        var canvas = Raster(width: width, height: height, background: .white)
        for shape in shapes {
            switch shape {
            case let .rect(x, y, w, h, fill, stroke):
                let x0 = Int(x.rounded()), y0 = Int(y.rounded()), x1 = Int((x + w).rounded()), y1 = Int((y + h).rounded())
                if let fill { canvas.fill(x0: x0, y0: y0, x1: x1, y1: y1, fill) }
                if let stroke {
                    canvas.fill(x0: x0, y0: y0, x1: x1, y1: y0 + 1, stroke)
                    canvas.fill(x0: x0, y0: y1 - 1, x1: x1, y1: y1, stroke)
                    canvas.fill(x0: x0, y0: y0, x1: x0 + 1, y1: y1, stroke)
                    canvas.fill(x0: x1 - 1, y0: y0, x1: x1, y1: y1, stroke)
                }
            case let .line(x1, y1, x2, y2, colour, width, dashed):
                canvas.line(x1, y1, x2, y2, colour, width: max(1, Int(width.rounded())), dashed: dashed)
            case let .text(x, y, string, size, anchor, colour):
                canvas.text(string, x: x, y: y, scale: max(1, Int(size / 7)), anchor: anchor, colour)
            }
        }
        return canvas
    }
}
