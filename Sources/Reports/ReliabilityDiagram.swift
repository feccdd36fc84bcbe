// The reliability diagram (DeGroot & Fienberg 1983; Niculescu-Mizil & Caruana 2005): accuracy
// against confidence per bin, next to the diagonal of perfect calibration, with the share of
// samples per bin beneath; one panel per evaluation (before and after temperature scaling).
import Foundation
import Training

public enum ReliabilityDiagram {
    static let accuracyColour = RGB(hex: "#1f77b4"), gapColour = RGB(hex: "#f4a6a6"), countColour = RGB(hex: "#9a9a9a")

    /// Panels side by side, each titled; `caption` goes under the figure.
    public static func drawing(panels: [(title: String, result: EvaluationResult)], caption: String) -> Drawing {
        let panelWidth = 440, height = 580
        var d = Drawing(width: 40 + panelWidth * panels.count, height: height)
        for (i, panel) in panels.enumerated() {
            draw(panel.result, title: panel.title, left: 40 + Double(i * panelWidth), into: &d)
        }
        d.add(.text(x: Double(d.width) / 2, y: Double(height - 12), string: caption, size: 11, anchor: .middle, colour: .black))
        return d
    }

    static func draw(_ r: EvaluationResult, title: String, left: Double, into d: inout Drawing) {
        let x0 = left + 50, plotW = 340.0, y0 = 84.0, plotH = 300.0
        let stripTop = y0 + plotH + 50, stripH = 60.0
        func px(_ c: Double) -> Double { x0 + c * plotW }
        func py(_ a: Double) -> Double { y0 + (1 - a) * plotH }
        d.add(.text(x: x0 + plotW / 2, y: 24, string: title, size: 14, anchor: .middle, colour: .black))
        d.add(.text(x: x0 + plotW / 2, y: 46, string: String(format: "ECE %.4f   MCE %.3f", r.expectedCalibrationError,
                                                            r.maximumCalibrationError), size: 14, anchor: .middle, colour: .black))
        d.add(.text(x: x0 + plotW / 2, y: 66, string: String(format: "NLL %.4f   accuracy %.2f%%", r.negativeLogLikelihood,
                                                            100 * r.accuracy), size: 14, anchor: .middle, colour: .black))
        let total = Double(max(1, r.reliability.reduce(0) { $0 + $1.count }))
        for bin in r.reliability where bin.count > 0 {
            let xl = px(bin.lower) + 1, w = (bin.upper - bin.lower) * plotW - 2
            // The gap between the bin's accuracy and its mean confidence (where it should be).
            let (lo, hi) = (min(bin.accuracy, bin.confidence), max(bin.accuracy, bin.confidence))
            d.add(.rect(x: xl, y: py(bin.accuracy), width: w, height: bin.accuracy * plotH, fill: accuracyColour, stroke: nil))
            if hi - lo > 0.002 {
                d.add(.rect(x: xl, y: py(hi), width: w, height: (hi - lo) * plotH, fill: gapColour, stroke: RGB(hex: "#d62728")))
            }
            let share = Double(bin.count) / total
            d.add(.rect(x: xl, y: stripTop + stripH * (1 - share), width: w, height: stripH * share, fill: countColour, stroke: nil))
        }
        d.add(.line(x1: px(0), y1: py(0), x2: px(1), y2: py(1), colour: .black, width: 1, dashed: true))
        d.add(.rect(x: x0, y: y0, width: plotW, height: plotH, fill: nil, stroke: .black))
        d.add(.rect(x: x0, y: stripTop, width: plotW, height: stripH, fill: nil, stroke: .black))
        for t in stride(from: 0.0, through: 1.0001, by: 0.2) {
            d.add(.line(x1: px(t), y1: y0 + plotH, x2: px(t), y2: y0 + plotH + 5, colour: .black, width: 1, dashed: false))
            d.add(.text(x: px(t), y: y0 + plotH + 20, string: String(format: "%.1f", t), size: 10, anchor: .middle, colour: .black))
            d.add(.line(x1: x0 - 5, y1: py(t), x2: x0, y2: py(t), colour: .black, width: 1, dashed: false))
            d.add(.text(x: x0 - 8, y: py(t) + 5, string: String(format: "%.1f", t), size: 10, anchor: .end, colour: .black))
        }
        d.add(.text(x: x0 + plotW / 2, y: y0 + plotH + 38, string: "confidence (top-class probability)", size: 10, anchor: .middle, colour: .black))
        d.add(.text(x: x0 + 6, y: y0 + 16, string: "accuracy", size: 10, anchor: .start, colour: accuracyColour))
        d.add(.text(x: x0 + 6, y: y0 + 32, string: "gap to diagonal", size: 10, anchor: .start, colour: RGB(hex: "#d62728")))
        d.add(.text(x: x0 + 6, y: stripTop + 16, string: "share of samples", size: 10, anchor: .start, colour: .black))
    }
}
