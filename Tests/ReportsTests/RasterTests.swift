// The PNG writer and the bitmap text: a decoder written here (zlib's uncompress, filter 0) gets
// back the exact pixels; glyphs land where the font says; SVG and raster come from one drawing.
import CZlib
import Foundation
@testable import Reports
@testable import Training
import TrainingTestSupport
import XCTest

final class RasterTests: XCTestCase {
    /// Splits a PNG into (type, data) chunks, checking each CRC.
    func chunks(_ png: [UInt8]) -> [(String, [UInt8])] {
        var out: [(String, [UInt8])] = []
        var i = 8
        func be32(_ at: Int) -> Int { Int(png[at]) << 24 | Int(png[at + 1]) << 16 | Int(png[at + 2]) << 8 | Int(png[at + 3]) }
        while i + 12 <= png.count {
            let n = be32(i)
            let body = Array(png[(i + 4)..<(i + 8 + n)])
            XCTAssertEqual(be32(i + 8 + n), Int(crc32(0, body, uInt(body.count))), "CRC of chunk at \(i)")
            out.append((String(decoding: body.prefix(4), as: UTF8.self), Array(body.dropFirst(4))))
            i += 12 + n
        }
        XCTAssertEqual(i, png.count, "chunks fill the file")
        return out
    }

    func testPNGDecodesToTheSamePixels() throws {
        var r = Raster(width: 7, height: 5, background: RGB(10, 20, 30))
        r.fill(x0: 2, y0: 1, x1: 4, y1: 3, RGB(200, 100, 0))
        r.set(6, 4, .white)
        let png = try r.png()
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let parts = chunks(png)
        XCTAssertEqual(parts.map { $0.0 }, ["IHDR", "IDAT", "IEND"])
        XCTAssertEqual(parts[0].1, [0, 0, 0, 7, 0, 0, 0, 5, 8, 2, 0, 0, 0], "7×5, 8-bit RGB")
        var size = uLong(5 * (1 + 7 * 3))
        var raw = [UInt8](repeating: 0, count: Int(size))
        XCTAssertEqual(uncompress(&raw, &size, parts[1].1, uLong(parts[1].1.count)), Z_OK)
        for y in 0..<5 {
            XCTAssertEqual(raw[y * 22], 0, "filter type 0")
            for x in 0..<7 {
                let i = y * 22 + 1 + x * 3
                XCTAssertEqual(RGB(raw[i], raw[i + 1], raw[i + 2]), r.pixel(x, y), "pixel (\(x), \(y))")
            }
        }
        XCTAssertEqual(r.pixel(3, 2), RGB(200, 100, 0))
        XCTAssertEqual(r.pixel(4, 2), RGB(10, 20, 30), "fill's upper bounds are exclusive")
    }

    func testTextDrawsTheGlyphBits() {
        var r = Raster(width: 20, height: 10, background: .white)
        r.text("l1", x: 1, y: 8, scale: 1, anchor: .start, .black)   // lower case is drawn as capitals
        for (n, ch) in ["L", "1"].enumerated() {
            let rows = Raster.font[Character(ch)]!
            for row in 0..<7 {
                for col in 0..<5 {
                    let on = rows[row] & (0x10 >> UInt8(col)) != 0
                    XCTAssertEqual(r.pixel(1 + n * 6 + col, 1 + row), on ? .black : .white, "\(ch) row \(row) col \(col)")
                }
            }
        }
        XCTAssertEqual(Raster.textWidth("l1", scale: 2), 22)
        var centred = Raster(width: 40, height: 10, background: .white)
        centred.text("II", x: 20, y: 8, scale: 1, anchor: .middle, .black)
        let columns = (0..<40).filter { x in (0..<10).contains { centred.pixel(x, $0) == .black } }
        XCTAssertEqual(Double(columns.first! + columns.last!) / 2, 19.5, accuracy: 1, "middle anchoring centres the ink")
    }

    func testEveryPrintableCharacterOfTheDiagramHasAGlyph() {
        let text = "ECE 0.0123  MCE 0.456  NLL 0.2345  acc 93.45% confidence (top-class probability) T = 1.234: test split, uncalibrated"
        let missing = Set(text.uppercased()).filter { Raster.font[$0] == nil }
        XCTAssertTrue(missing.isEmpty, "no glyph for \(missing)")
    }

    func testDiagramShapesAppearInBothRenderings() throws {
        var bins = [ReliabilityBin]()
        for b in 0..<15 {
            let lower = Double(b) / 15, upper = Double(b + 1) / 15, confidence = (Double(b) + 0.5) / 15
            bins.append(ReliabilityBin(lower: lower, upper: upper, count: b == 14 ? 90 : 1,
                                       confidence: confidence, accuracy: b == 14 ? 0.9 : 0.2))
        }
        let r = EvaluationResult(loss: 0.3, accuracy: 0.88, count: 104, perClassCorrect: [], perClassCount: [],
                                 expectedCalibrationError: 0.05, overconfidence: 0.02, maximumCalibrationError: 0.4,
                                 negativeLogLikelihood: 0.3, brierScore: 0.2, reliability: bins)
        let d = ReliabilityDiagram.drawing(panels: [("before", r), ("after", r)], caption: "c")
        let svg = d.svg()
        XCTAssertEqual(svg.split(separator: "\n").filter { $0.hasPrefix("<rect") && $0.contains("fill=\"#1f77b4\"") }.count, 30, "one accuracy bar per non-empty bin per panel")
        XCTAssertTrue(svg.contains("ECE 0.0500"))
        let raster = d.raster()
        XCTAssertEqual(raster.width, d.width)
        let blue = RGB(hex: "#1f77b4")
        var painted = 0
        for y in 0..<raster.height { for x in 0..<raster.width where raster.pixel(x, y) == blue { painted += 1 } }
        XCTAssertGreaterThan(painted, 1000, "the bars are painted in the PNG too")
    }
}
