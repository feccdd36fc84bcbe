// Sums of metrics over samples (loss, correct counts, calibration bins), all-reduced over ranks.
//
// Each value is added with ExactSum, so the global sums, and so every logged loss and accuracy,
// have the same bits on any number of ranks and with any batch split (on the float path too:
// the metrics' cost is a few words per sample, and one code path serves both).
import Collectives
import TensorCore

struct MetricSums {
    let count: Int
    private var words: [Int64]

    init(count: Int) {
        self.count = count
        words = [Int64](repeating: 0, count: count * ExactSum.width)
    }

    @inline(__always)
    mutating func add(_ index: Int, _ value: Double) {
        words.withUnsafeMutableBufferPointer { ExactSum.add(value, into: $0.baseAddress! + index * ExactSum.width) }
    }

    /// This rank's sums (no communication).
    var local: [Double] { words.withUnsafeBufferPointer { ExactSum.values($0) } }

    /// The sums over every rank; each rank gets the same values.
    mutating func global(_ communicator: Communicator) throws -> [Double] {
        try communicator.allReduce(&words)
        return local
    }
}
