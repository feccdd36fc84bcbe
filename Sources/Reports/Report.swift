// Reports over finished or running runs: a table, SVG plots and a plain-words diagnosis of
// over- and under-fitting, as report.md and a self-contained report.html.
import Formats
import Foundation

public struct RunMetrics {
    public var directory: String
    public var label: String
    /// Per-epoch records of metrics.jsonl, in order.
    public var epochs: [EpochMetrics]
    public var warnings: [String]

    /// Reads `<dir>/metrics.jsonl`. A truncated last line (a run still writing, or killed) is
    /// skipped with a warning; any other bad line is an error naming the file and line.
    public static func load(_ dir: String) throws -> RunMetrics {
        let path = (dir as NSString).appendingPathComponent("metrics.jsonl")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MetricsError("\(path): no metrics file (is \(dir) a Lockstep run directory?)")
        }
        let text = String(decoding: data, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        var epochs: [EpochMetrics] = []
        var warnings: [String] = []
        struct Kind: Decodable { var kind: String }
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        for (i, line) in lines.enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            let data = Data(line.utf8)
            guard let kind = try? decoder.decode(Kind.self, from: data) else {
                if i == lines.count - 1 && !text.hasSuffix("\n") {
                    warnings.append("\(path):\(i + 1): skipped a truncated last line")
                    continue
                }
                throw MetricsError("\(path):\(i + 1): not a JSON object with a \"kind\"")
            }
            guard kind.kind == "epoch" else { continue }
            do {
                epochs.append(try decoder.decode(EpochMetrics.self, from: data))
            } catch {
                throw MetricsError("\(path):\(i + 1): not an epoch record of this Lockstep version (\(error))")
            }
        }
        guard !epochs.isEmpty else { throw MetricsError("\(path): no epoch records yet") }
        let mode = epochs.last!.bnMode
        let ranks = epochs.last!.worldSize
        let label = "\((dir as NSString).lastPathComponent) (bn \(mode), \(ranks) rank\(ranks == 1 ? "" : "s"))"
        return RunMetrics(directory: dir, label: label, epochs: epochs, warnings: warnings)
    }

    public func series(_ key: KeyPath<EpochMetrics, Double>) -> [(x: Double, y: Double)] {
        epochs.map { (Double($0.epoch), $0[keyPath: key]) }
    }

    /// The epochs that have the value (validation metrics exist only with a split).
    public func series(_ key: KeyPath<EpochMetrics, Double?>) -> [(x: Double, y: Double)] {
        epochs.compactMap { e in e[keyPath: key].map { (Double(e.epoch), $0) } }
    }

    public func last(_ key: KeyPath<EpochMetrics, Double>) -> Double? { epochs.last?[keyPath: key] }
    public func last(_ key: KeyPath<EpochMetrics, Double?>) -> Double? { epochs.last?[keyPath: key] }
    public func best(_ key: KeyPath<EpochMetrics, Double>) -> Double? { epochs.map { $0[keyPath: key] }.max() }

    /// "overfitting", "underfitting" or nil, with the reason in words.
    public var diagnosis: String? {
        // Held-out loss: the validation split's when the run has one, else the test split's.
        let hasValidation = !epochs.isEmpty && epochs.allSatisfy { $0.validationLoss != nil }
        let heldOut = hasValidation ? "validation" : "test"
        let train = series(\.trainLoss).map { $0.y }
        let test = hasValidation ? epochs.map { $0.validationLoss! } : series(\.testLoss).map { $0.y }
        let acc = series(\.trainAccuracy).map { $0.y }
        let k = 3
        // Overfitting: the held-out loss bottomed out at least k epochs before the end and is now
        // more than 2% above that minimum, while training loss kept falling since. (Not "rose k
        // epochs in a row": a real held-out curve wobbles, as an early-stopped run shows.)
        if let low = test.indices.min(by: { test[$0] < test[$1] }), test.count - 1 - low >= k,
           test.last! > test[low] * 1.02, train.last! < train[low] {
            return "looks overfitted: \(heldOut) loss bottomed out at epoch \(epochs[low].epoch) (\(fmt(test[low]))) and has risen to \(fmt(test.last!)) over the \(test.count - 1 - low) epochs since (+\(String(format: "%.1f", 100 * (test.last! / test[low] - 1)))%), while training loss kept falling (\(fmt(train[low])) → \(fmt(train.last!)))"
        }
        if train.count >= k, let final = acc.last {
            let tail = Array(train.suffix(k))
            let change = abs(tail.first! - tail.last!) / max(tail.first!, 1e-12)
            if change < 0.01 && final < 0.8 {
                return "looks underfitted: training loss is flat (changed \(String(format: "%.1f", 100 * change))% over the last \(k) epochs) and high (training accuracy \(String(format: "%.1f", 100 * final))%)"
            }
        }
        return nil
    }
}

func fmt(_ v: Double) -> String { String(format: "%.4f", v) }

public struct Report {
    public var title: String
    public var runs: [RunMetrics]

    public init(title: String, runs: [RunMetrics]) {
        self.title = title
        self.runs = runs
    }

    public var charts: [(file: String, chart: LineChart)] {
        [
            ("test-accuracy.svg", LineChart(title: hasValidation ? "Test (solid) and validation (dotted) accuracy" : "Test accuracy",
                                            xLabel: "epoch", yLabel: "accuracy",
                                            series: runs.enumerated().flatMap { i, r in
                                                [Series(name: r.label, points: r.series(\.testAccuracy), colour: i)]
                                                    + validation(r, \.validationAccuracy, colour: i) })),
            ("loss.svg", LineChart(title: "Train (solid), test (dashed)" + (hasValidation ? " and validation (dotted)" : "") + " loss",
                                   xLabel: "epoch", yLabel: "cross-entropy",
                                   series: runs.enumerated().flatMap { i, r in
                                       [Series(name: "\(r.label) train", points: r.series(\.trainLoss), colour: i),
                                        Series(name: "\(r.label) test", points: r.series(\.testLoss), dashed: true, colour: i)]
                                           + validation(r, \.validationLoss, colour: i) })),
            ("step-time.svg", LineChart(title: "Time per step", xLabel: "epoch", yLabel: "milliseconds",
                                        series: runs.map { r in Series(name: r.label, points: r.series(\.secondsPerStep).map { ($0.x, 1000 * $0.y) }) })),
        ]
    }

    var hasValidation: Bool { runs.contains { r in r.epochs.contains { $0.validationLoss != nil } } }

    func validation(_ r: RunMetrics, _ key: KeyPath<EpochMetrics, Double?>, colour: Int) -> [Series] {
        let points = r.series(key)
        return points.isEmpty ? [] : [Series(name: "\(r.label) validation", points: points, dotted: true, colour: colour)]
    }

    /// The table's rows: one per run, columns as in `tableHeader`.
    public var tableHeader: [String] {
        ["run", "final test acc", "best test acc", "final train loss", "final test loss", "train–test gap (loss)",
         "ms/step", "communication share", "BN running-mean spread", "BN running-var spread", "ECE"]
    }

    public var tableRows: [[String]] {
        runs.map { r in
            let step = r.last(\.secondsPerStep), comm = r.last(\.communicationSecondsPerStep)
            func pct(_ v: Double?) -> String { v.map { String(format: "%.2f%%", 100 * $0) } ?? "–" }
            func num(_ v: Double?) -> String { v.map { String(format: "%.4f", $0) } ?? "–" }
            let gap = r.last(\.testLoss).flatMap { t in r.last(\.trainLoss).map { t - $0 } }
            return [r.label, pct(r.last(\.testAccuracy)), pct(r.best(\.testAccuracy)), num(r.last(\.trainLoss)),
                    num(r.last(\.testLoss)), num(gap), step.map { String(format: "%.2f", 1000 * $0) } ?? "–",
                    (step != nil && comm != nil && step! > 0) ? pct(comm! / step!) : "–",
                    r.last(\.runningMeanSpread).map { String(format: "%.4g", $0) } ?? "–",
                    r.last(\.runningVarSpread).map { String(format: "%.4g", $0) } ?? "–",
                    num(r.last(\.expectedCalibrationError))]
        }
    }

    var findings: [String] {
        var lines = runs.map { r in "\(r.label): \(r.diagnosis ?? "no sign of over- or under-fitting (held-out loss within 2% of its minimum or at it within the last 3 epochs; training loss still moving or low)")" }
        if runs.contains(where: { $0.epochs.last?.bnMode == "local" && ($0.epochs.last?.worldSize ?? 1) > 1 }) {
            lines.append("With local BN, training loss and accuracy are measured with each rank's own batch statistics (what the model trains with); test figures use the running statistics averaged across ranks (bn.local_eval_stats).")
        }
        if runs.contains(where: { ($0.epochs.last?.worldSize ?? 1) > 1 }) {
            lines.append("Communication share counts time inside collectives, including waiting there for slower ranks.")
        }
        return lines
    }

    public var markdown: String {
        var s = "# \(title)\n\n"
        s += "| " + tableHeader.joined(separator: " | ") + " |\n"
        s += "|" + String(repeating: " --- |", count: tableHeader.count) + "\n"
        for row in tableRows { s += "| " + row.joined(separator: " | ") + " |\n" }
        s += "\n"
        for f in findings { s += "- \(f)\n" }
        s += "\n"
        for c in charts { s += "![\(c.chart.title)](\(c.file))\n\n" }
        let warnings = runs.flatMap { $0.warnings }
        if !warnings.isEmpty { s += "Warnings:\n" + warnings.map { "- \($0)\n" }.joined() }
        return s
    }

    public var html: String {
        let e = LineChart.escape
        var s = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(e(title))</title>
        <style>body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:12px 0}
        td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
        th{background:#f3f3f3}.charts svg{margin:8px 8px 8px 0;border:1px solid #eee}</style></head>
        <body><h1>\(e(title))</h1>
        <table><thead><tr>\(tableHeader.map { "<th>\(e($0))</th>" }.joined())</tr></thead><tbody>

        """
        for row in tableRows { s += "<tr>" + row.map { "<td>\(e($0))</td>" }.joined() + "</tr>\n" }
        s += "</tbody></table>\n<ul>\n" + findings.map { "<li>\(e($0))</li>\n" }.joined() + "</ul>\n<div class=\"charts\">\n"
        for c in charts { s += c.chart.svg }
        s += "</div>\n"
        let warnings = runs.flatMap { $0.warnings }
        if !warnings.isEmpty { s += "<p>Warnings:</p><ul>" + warnings.map { "<li>\(e($0))</li>" }.joined() + "</ul>\n" }
        s += "</body></html>\n"
        return s
    }

    /// Writes report.md, report.html and the SVG files into `dir`.
    public func write(to dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for c in charts { try writeAtomically(Array(c.chart.svg.utf8), to: (dir as NSString).appendingPathComponent(c.file)) }
        try writeAtomically(Array(markdown.utf8), to: (dir as NSString).appendingPathComponent("report.md"))
        try writeAtomically(Array(html.utf8), to: (dir as NSString).appendingPathComponent("report.html"))
    }
}
