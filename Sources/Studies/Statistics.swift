// Small-sample statistics for comparing runs: mean, sample standard deviation and the 95%
// Student-t interval of a mean, and the paired difference of two sets of runs that share seeds.
import Foundation

public struct MeanInterval: Sendable, Equatable {
    public var count: Int
    public var mean: Double
    /// Sample standard deviation (n − 1); 0 for one value.
    public var standardDeviation: Double
    /// The 95% interval mean ± t(0.975, n − 1)·sd/√n; nil for fewer than two values.
    public var lower: Double?
    public var upper: Double?

    public init(_ values: [Double]) {
        count = values.count
        mean = values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count)
        let m = mean
        standardDeviation = values.count < 2 ? 0 : (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(values.count - 1)).squareRoot()
        if values.count >= 2 {
            let half = Self.t975(degreesOfFreedom: values.count - 1) * standardDeviation / Double(values.count).squareRoot()
            lower = mean - half
            upper = mean + half
        }
    }

    /// The 97.5% quantile of Student's t (two-sided 95%), from the standard table for 1-30
    /// degrees of freedom; beyond that the normal 1.96 is within 2% of it.
    public static func t975(degreesOfFreedom df: Int) -> Double {
        let table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                     2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                     2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
        precondition(df >= 1)
        return df <= table.count ? table[df - 1] : 1.96
    }

    /// The paired difference a − b over values that share an index (the same seed): its mean
    /// and interval. Pairing removes what the two runs of a seed have in common.
    public static func pairedDifference(_ a: [Double], _ b: [Double]) -> MeanInterval {
        precondition(a.count == b.count)
        return MeanInterval(zip(a, b).map { $0 - $1 })
    }

    /// "93.21 ± 0.12 (93.09 – 93.33)" in percent for accuracies in [0, 1].
    public var percentText: String {
        guard let lower, let upper else { return String(format: "%.2f%%", 100 * mean) }
        return String(format: "%.2f%% [%.2f, %.2f]", 100 * mean, 100 * lower, 100 * upper)
    }
}
