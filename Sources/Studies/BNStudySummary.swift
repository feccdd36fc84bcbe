// The study's summary: per (per-rank batch, variant) the mean accuracy with its 95% interval,
// the paired difference sync − local per batch size, what sync BN's collectives cost per step,
// one sentence on where local BN starts to lose, and a chart of accuracy against batch size.
import Foundation
import Reports

extension BNStudy {
    public struct Summary {
        public var markdown: String
        public var chart: LineChart
    }

    /// `setting` says how the runs ran (ranks, communicator, shared cores); it heads the table
    /// and the chart, so a reader of either knows what the times mean.
    public func summary(_ outcomes: [Outcome], setting: String) -> Summary {
        func values(_ v: String, _ b: Int, _ key: (Outcome) -> Double) -> [Double] {
            seeds.compactMap { s in outcomes.first { $0.run.variant == v && $0.run.perRankBatch == b && $0.run.seed == s }.map(key) }
        }
        var md = ["# Batch norm study", "", setting, "",
                  "| per-rank batch | variant | runs | test accuracy, mean [95% interval] | sd (points) | ms/step | collectives ms/step |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for b in perRankBatches {
            for v in variants {
                let acc = MeanInterval(values(v, b, { $0.accuracy }))
                let step = MeanInterval(values(v, b, { $0.secondsPerStep })), comm = MeanInterval(values(v, b, { $0.communicationPerStep }))
                md.append(String(format: "| %d | %@ | %d | %@ | %.2f | %.2f | %.2f |", b, v as NSString, acc.count, acc.percentText as NSString,
                                 100 * acc.standardDeviation, 1000 * step.mean, 1000 * comm.mean))
            }
        }
        md.append("")
        var firstLoss: Int?
        if variants.contains("sync") {
            let others = variants.filter { $0 != "sync" }
            if !others.isEmpty {
                md += ["Paired differences (sync − other, the runs of one seed share initial weights and data order):", "",
                       "| per-rank batch | " + others.map { "sync − \($0) (points) [95% interval]" }.joined(separator: " | ") + " |",
                       "| --- |" + String(repeating: " --- |", count: others.count)]
                for b in perRankBatches {
                    var cells: [String] = []
                    for v in others {
                        let d = MeanInterval.pairedDifference(values("sync", b, { $0.accuracy }), values(v, b, { $0.accuracy }))
                        if let lo = d.lower, let hi = d.upper {
                            cells.append(String(format: "%+.2f [%+.2f, %+.2f]", 100 * d.mean, 100 * lo, 100 * hi))
                            if v == "local", lo > 0, firstLoss == nil || b > firstLoss! { firstLoss = b }
                        } else {
                            cells.append(String(format: "%+.2f (one seed)", 100 * d.mean))
                        }
                    }
                    md.append("| \(b) | " + cells.joined(separator: " | ") + " |")
                }
                md.append("")
            }
        }
        if variants.contains("local") && variants.contains("sync") {
            if let b = firstLoss {
                md.append("Local BN loses accuracy against sync BN beyond seed-to-seed noise (the paired 95% interval of sync − local lies above 0) from a per-rank batch of \(b) down\(b == perRankBatches.min() ? "" : " (the largest such size tested)").")
            } else if seeds.count >= 2 {
                md.append("At no per-rank batch tested is local BN's loss against sync BN larger than seed-to-seed noise (every paired 95% interval of sync − local includes 0).")
            } else {
                md.append("One seed per setting: no interval, so no statement on significance (use --seeds 3 or more).")
            }
            for b in perRankBatches {
                // Paired by seed like the accuracies: the runs of one seed take the same steps.
                let d = MeanInterval.pairedDifference(values("sync", b, { $0.communicationPerStep }), values("local", b, { $0.communicationPerStep }))
                let step = MeanInterval(values("sync", b, { $0.secondsPerStep })).mean
                if d.mean.isFinite, step > 0 {
                    let interval = d.lower.map { String(format: " [95%% interval %+.2f, %+.2f]", 1000 * $0, 1000 * d.upper!) } ?? ""
                    md.append(String(format: "- per-rank batch %d: sync BN's extra collectives cost %.2f ms per step%@, %.1f%% of its step.", b,
                                     1000 * d.mean, interval as NSString, 100 * d.mean / step))
                }
            }
        }
        var series: [Series] = []
        for (i, v) in variants.enumerated() {
            let stats = perRankBatches.map { b in (log2(Double(b)), MeanInterval(values(v, b, { $0.accuracy }))) }
            series.append(Series(name: v, points: stats.map { ($0.0, 100 * $0.1.mean) }, colour: i))
            let bands = stats.filter { $0.1.lower != nil }
            if !bands.isEmpty {
                series.append(Series(name: "\(v) 95% interval", points: bands.map { ($0.0, 100 * $0.1.lower!) }, dotted: true, colour: i))
                series.append(Series(name: "\(v) 95% interval (upper)", points: bands.map { ($0.0, 100 * $0.1.upper!) }, dotted: true, colour: i))
            }
        }
        var chart = LineChart(title: "Test accuracy against per-rank batch (\(setting))", xLabel: "log2(per-rank batch)",
                              yLabel: "test accuracy (%)", series: series)
        // A variant that collapses (local BN on 2 samples per rank) would squash the rest into a
        // sliver: the axis starts 6 points below the lowest best-of-variants mean over the batch
        // sizes, and a value below that is marked at the edge with its number.
        let bestPerBatch = perRankBatches.map { b in variants.map { MeanInterval(values($0, b, { $0.accuracy })).mean }.filter(\.isFinite).max() ?? .nan }
        if let lowestBest = bestPerBatch.filter(\.isFinite).min() { chart.yFloor = 100 * lowestBest - 6 }
        return Summary(markdown: md.joined(separator: "\n") + "\n", chart: chart)
    }
}
