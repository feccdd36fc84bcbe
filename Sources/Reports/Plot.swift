// Line charts drawn as standalone SVG: axes with ticks and labels, a legend, one colour per
// series. No external assets, so a report opens anywhere.
import Foundation

public struct Series {
    public var name: String
    public var points: [(x: Double, y: Double)]
    public var dashed: Bool
    /// Dotted (validation curves), drawn finer than dashed.
    public var dotted: Bool
    /// Index into the palette; series of one run share it (train solid, test dashed).
    public var colour: Int?
    public init(name: String, points: [(x: Double, y: Double)], dashed: Bool = false, dotted: Bool = false, colour: Int? = nil) {
        self.dotted = dotted
        self.name = name
        self.points = points
        self.dashed = dashed
        self.colour = colour
    }
}

public struct LineChart {
    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    public var width = 640.0, height = 360.0
    /// Values below this are drawn at the bottom edge, hollow, with their value written beside
    /// them, so that one collapsed run does not squash the differences among the rest.
    public var yFloor: Double?
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    public init(title: String, xLabel: String, yLabel: String, series: [Series]) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
    }

    /// "Nice" tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart).
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 5) -> [Double] {
        guard hi > lo else { return [lo] }
        let magnitude = pow(10, floor(log10((hi - lo) / Double(count))))
        // Of the steps 1, 2, 5 and 10 times that magnitude, the one whose tick count is nearest
        // to `count` (with at least three ticks when possible).
        func ticks(step: Double) -> [Double] {
            let first = Int(ceil(lo / step - 1e-9)), last = Int(floor(hi / step + 1e-9))
            return first <= last ? (first...last).map { Double($0) * step } : []
        }
        let options = [1.0, 2, 5, 10].map { ticks(step: $0 * magnitude) }
        return options.min { a, b in
            let pa = a.count < 3 ? 100 : 0, pb = b.count < 3 ? 100 : 0
            return abs(a.count - count) + pa < abs(b.count - count) + pb
        } ?? [lo, hi]
    }

    static func label(_ v: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 1000 || abs(v) < 0.001 { return String(format: "%.2g", v) }
        var s = String(format: "%.4f", v)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }

    /// `text` in lines of at most `characters`, broken at spaces.
    static func wrap(_ text: String, characters: Int) -> [String] {
        var lines: [String] = [], line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty && line.count + 1 + word.count > characters { lines.append(line); line = "" }
            line += (line.isEmpty ? "" : " ") + word
        }
        return lines + (line.isEmpty && !lines.isEmpty ? [] : [line])
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    public var svg: String {
        // Wide enough for the longest legend label (about 6.6 px per character at 12 px).
        let legendWidth = 44 + 6.6 * Double(series.map { $0.name.count }.max() ?? 10)
        let width = self.width + max(0, legendWidth - 150)
        // The title wrapped at spaces to the figure's width (about 7.8 px per bold 14 px character).
        let titleLines = Self.wrap(title, characters: max(20, Int((width - 24) / 7.8)))
        let left = 64.0, right = 16.0, top = 18.0 + 18.0 * Double(titleLines.count), bottom = 48.0
        let height = self.height + 18.0 * Double(titleLines.count - 1)
        let plotW = width - left - right - legendWidth, plotH = height - top - bottom
        let all = series.flatMap { $0.points }.filter { $0.x.isFinite && $0.y.isFinite }
        var (x0, x1) = (all.map { $0.x }.min() ?? 0, all.map { $0.x }.max() ?? 1)
        var (y0, y1) = (all.map { $0.y }.min() ?? 0, all.map { $0.y }.max() ?? 1)
        let clipped = yFloor.map { $0 > y0 && $0 < y1 } ?? false
        if clipped { y0 = yFloor! }
        if x1 <= x0 { x0 -= 0.5; x1 += 0.5 }
        if y1 <= y0 { y0 -= abs(y0) * 0.05 + 0.01; y1 += abs(y1) * 0.05 + 0.01 }
        let pad = (y1 - y0) * 0.05
        if !clipped { y0 -= pad }
        y1 += pad
        let xt = Self.ticks(x0, x1), yt = Self.ticks(y0, y1)
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * plotW }
        func py(_ y: Double) -> Double { top + (1 - (y - y0) / (y1 - y0)) * plotH }
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect x="0" y="0" width="\(Int(width))" height="\(Int(height))" fill="white"/>

        """
        for (k, line) in titleLines.enumerated() {
            s += "<text x=\"\(width / 2)\" y=\"\(20 + 18 * Double(k))\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">\(Self.escape(line))</text>\n"
        }
        for t in yt {
            let y = py(t)
            s += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + plotW)\" y2=\"\(y)\" stroke=\"#e5e5e5\"/>\n"
            s += "<text x=\"\(left - 6)\" y=\"\(y + 4)\" text-anchor=\"end\">\(Self.label(t))</text>\n"
        }
        for t in xt {
            let x = px(t)
            s += "<line x1=\"\(x)\" y1=\"\(top + plotH)\" x2=\"\(x)\" y2=\"\(top + plotH + 5)\" stroke=\"black\"/>\n"
            s += "<text x=\"\(x)\" y=\"\(top + plotH + 18)\" text-anchor=\"middle\">\(Self.label(t))</text>\n"
        }
        s += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotW)\" height=\"\(plotH)\" fill=\"none\" stroke=\"black\"/>\n"
        s += "<text x=\"\(left + plotW / 2)\" y=\"\(height - 10)\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        s += "<text transform=\"translate(16 \(top + plotH / 2)) rotate(-90)\" text-anchor=\"middle\">\(Self.escape(yLabel))</text>\n"
        for (i, series) in series.enumerated() {
            let colour = Self.palette[(series.colour ?? i) % Self.palette.count]
            let pts = series.points.filter { $0.x.isFinite && $0.y.isFinite }
            let dash = series.dotted ? " stroke-dasharray=\"2 3\"" : series.dashed ? " stroke-dasharray=\"6 4\"" : ""
            let path = pts.map { String(format: "%.1f,%.1f", px($0.x), py(max($0.y, y0))) }.joined(separator: " ")
            s += "<polyline class=\"series\" data-name=\"\(Self.escape(series.name))\" data-points=\"\(pts.count)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\"\(dash) points=\"\(path)\"/>\n"
            for p in pts {
                if p.y < y0 {   // below the floor: hollow, at the edge, with its value
                    s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"white\" stroke=\"%@\" stroke-width=\"1.5\"/>\n", px(p.x), py(y0), colour as NSString)
                    s += String(format: "<text x=\"%.1f\" y=\"%.1f\" fill=\"%@\" font-size=\"11\">%@ ↓</text>\n", px(p.x) + 6, py(y0) - 6 - 12 * Double(i % 3), colour as NSString, Self.label((p.y * 10).rounded() / 10) as NSString)
                } else {
                    s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%@\"/>\n", px(p.x), py(p.y), colour as NSString)
                }
            }
            let ly = top + 12 + Double(i) * 18, lx = left + plotW + 14
            s += "<line x1=\"\(lx)\" y1=\"\(ly - 4)\" x2=\"\(lx + 22)\" y2=\"\(ly - 4)\" stroke=\"\(colour)\" stroke-width=\"2\"\(dash)/>\n"
            s += "<text x=\"\(lx + 28)\" y=\"\(ly)\">\(Self.escape(series.name))</text>\n"
        }
        s += "</svg>\n"
        return s
    }
}
