// Sums of metrics over samples (loss, correct counts, calibration bins), all-reduced over ranks.
//
// In exact mode each value is added with ExactSum, so the global sums, and so every logged loss
// and accuracy, have the same bits on any number of ranks and with any batch split. Otherwise
// they are plain Double sums (the order of addition then depends on the split).
import Collectives
import TensorCore

struct MetricSums {
    let count: Int
    let exact: Bool
    private var doubles: [Double]
    private var words: [Int64]

    init(count: Int, exact: Bool) {
        self.count = count
        self.exact = exact
        doubles = [Double](repeating: 0, count: exact ? 0 : count)
        words = [Int64](repeating: 0, count: exact ? count * ExactSum.width : 0)
    }

    @inline(__always)
    mutating func add(_ index: Int, _ value: Double) {
        if exact {
            words.withUnsafeMutableBufferPointer { ExactSum.add(value, into: $0.baseAddress! + index * ExactSum.width) }
        } else {
            doubles[index] += value
        }
    }

    /// This rank's sums (no communication).
    var local: [Double] {
        exact ? words.withUnsafeBufferPointer { ExactSum.values($0) } : doubles
    }

    /// The sums over every rank; each rank gets the same values.
    mutating func global(_ communicator: Communicator) throws -> [Double] {
        if exact {
            try communicator.allReduce(&words)
            return local
        }
        var d = doubles
        try communicator.allReduce(&d)
        return d
    }
}
