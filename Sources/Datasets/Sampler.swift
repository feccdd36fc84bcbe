// The global-batch sampler: world-size invariant data order.
//
// Epoch e's order is a permutation of the whole dataset drawn from (seed, e); step s takes
// global batch s, the slice [s·B, (s+1)·B) of that permutation; rank r of R takes a contiguous
// part of the global batch, lower ranks taking one more sample when B does not divide by R
// (in exact mode: whole chunks of the batch, lower ranks taking one more chunk).
import TensorCore

public struct GlobalBatchSampler: Sendable {
    public let datasetSize: Int
    public let globalBatch: Int
    public let seed: UInt64
    public let shuffle: Bool
    public let dropLast: Bool

    public init(datasetSize: Int, globalBatch: Int, seed: UInt64, shuffle: Bool = true, dropLast: Bool = false) {
        precondition(globalBatch > 0)
        self.datasetSize = datasetSize
        self.globalBatch = globalBatch
        self.seed = seed
        self.shuffle = shuffle
        self.dropLast = dropLast
    }

    public var stepsPerEpoch: Int {
        dropLast ? datasetSize / globalBatch : (datasetSize + globalBatch - 1) / globalBatch
    }

    /// A permutation of 0..<datasetSize (Fisher–Yates driven by counter-based randomness).
    public func permutation(epoch: Int) -> [Int] {
        var order = Array(0..<datasetSize)
        guard shuffle, datasetSize > 1 else { return order }
        let stream = Philox(seed: seed).stream(.shuffle, epoch, 0)
        for i in stride(from: datasetSize - 1, to: 0, by: -1) {
            let j = stream.below(i + 1, i)
            order.swapAt(i, j)
        }
        return order
    }

    /// Global indices of step `step`'s batch within an epoch's `order`.
    public func globalBatch(step: Int, order: [Int]) -> ArraySlice<Int> {
        let lo = step * globalBatch
        let hi = min(lo + globalBatch, datasetSize)
        return order[lo..<hi]
    }

    /// A validation split: `fraction` of 0..<count chosen by a permutation keyed by `seed` alone
    /// (the same samples on any number of ranks, every epoch). Returns (training, validation)
    /// indices, each in increasing order.
    public static func holdout(count: Int, fraction: Double, seed: UInt64) -> (train: [Int], validation: [Int]) {
        let k = Int((fraction * Double(count)).rounded())
        guard k > 0 else { return (Array(0..<count), []) }
        var order = Array(0..<count)
        let stream = Philox(seed: seed).stream(.validation, 0, 0)
        for i in stride(from: count - 1, to: 0, by: -1) { order.swapAt(i, stream.below(i + 1, i)) }
        return (order[..<(count - k)].sorted(), order[(count - k)...].sorted())
    }

    /// Rank `rank`'s contiguous part of a batch of `total` samples among `worldSize` ranks:
    /// lower ranks take one more when it does not divide.
    public static func shard(total: Int, rank: Int, worldSize: Int) -> Range<Int> {
        let base = total / worldSize, extra = total % worldSize
        let lo = rank * base + min(rank, extra)
        return lo..<(lo + base + (rank < extra ? 1 : 0))
    }

    /// Exact mode: the batch is cut into chunks of `chunk` samples (the last may be short) and
    /// rank `rank` takes a contiguous run of whole chunks, lower ranks one more chunk when they
    /// do not divide. Without a chunk size, `shard(total:rank:worldSize:)`.
    public static func shard(total: Int, chunk: Int?, rank: Int, worldSize: Int) -> Range<Int> {
        guard let chunk else { return shard(total: total, rank: rank, worldSize: worldSize) }
        let chunks = shard(total: (total + chunk - 1) / chunk, rank: rank, worldSize: worldSize)
        return min(chunks.lowerBound * chunk, total)..<min(chunks.upperBound * chunk, total)
    }
}
