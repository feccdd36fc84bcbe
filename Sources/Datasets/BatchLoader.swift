// The batch loader: a rank's share of each global batch, copied (and augmented, keyed by sample
// index and epoch) into one batch tensor that the loader owns, with its labels.
//
// Sharding follows GlobalBatchSampler: contiguous shares, lower ranks one more sample; in exact
// mode (`chunk` set) whole chunks of the batch, so that each chunk is computed the same way on
// whichever rank holds it.
import TensorCore

/// One micro-batch as this rank sees it.
public struct LocalBatch: Sendable {
    /// Global dataset indices of this rank's samples.
    public var indices: [Int]
    /// Exact mode: how many of this rank's chunks precede this micro-batch in the step (its first
    /// chunk's gradient slot). 0 otherwise.
    public var chunkOffset: Int
}

/// A step as this rank sees it.
public struct StepPlan: Sendable {
    public var microBatches: [LocalBatch]
    /// This rank's chunks over all micro-batches (exact mode).
    public var localChunks: Int
    /// Chunks of the whole global batch (exact mode): how many values each gradient sum adds.
    public var totalChunks: Int
}

public final class BatchLoader {
    public let dataset: ImageDataset
    public let augmentation: Augmentation?
    public let seed: UInt64
    /// The value a black pixel has after normalisation (random crops pad with it).
    public let padValue: Float
    /// Samples per chunk in exact mode, nil otherwise.
    public let chunk: Int?
    private var batch: Tensor?
    /// Labels of the samples last loaded, in batch order.
    public private(set) var labels: [Int32] = []

    public init(dataset: ImageDataset, augmentation: Augmentation? = nil, seed: UInt64, padValue: Float, chunk: Int?) {
        self.dataset = dataset
        self.augmentation = augmentation.flatMap { $0.isIdentity ? nil : $0 }
        self.seed = seed
        self.padValue = padValue
        self.chunk = chunk
    }

    /// This rank's part of `global` (the step's dataset indices) split into `microSteps` parts.
    public func plan(_ global: ArraySlice<Int>, microSteps: Int, rank: Int, worldSize: Int) -> StepPlan {
        var micro: [LocalBatch] = []
        var offset = 0, total = 0
        for k in 0..<microSteps {
            let part = GlobalBatchSampler.shard(total: global.count, chunk: chunk, rank: k, worldSize: microSteps)
            let microBatch = global[(global.startIndex + part.lowerBound)..<(global.startIndex + part.upperBound)]
            let mine = GlobalBatchSampler.shard(total: microBatch.count, chunk: chunk, rank: rank, worldSize: worldSize)
            let indices = Array(microBatch[(microBatch.startIndex + mine.lowerBound)..<(microBatch.startIndex + mine.upperBound)])
            micro.append(LocalBatch(indices: indices, chunkOffset: offset))
            if let chunk {
                offset += (indices.count + chunk - 1) / chunk
                total += (microBatch.count + chunk - 1) / chunk
            }
        }
        return StepPlan(microBatches: micro, localChunks: offset, totalChunks: total)
    }

    /// This rank's contiguous part of the whole dataset (evaluation), and the batch size to walk
    /// it with: `batch`, rounded down to whole chunks in exact mode.
    public func evaluationShare(rank: Int, worldSize: Int, batch: Int, total: Int? = nil) -> (range: Range<Int>, batch: Int) {
        let range = GlobalBatchSampler.shard(total: total ?? dataset.count, chunk: chunk, rank: rank, worldSize: worldSize)
        return (range, chunk.map { max($0, batch / $0 * $0) } ?? batch)
    }

    /// Copies the samples `indices` into the batch tensor (augmented for `epoch` when the loader
    /// augments) and their labels into `labels`. The tensor is reused by the next call.
    public func load(_ indices: [Int], epoch: Int) throws -> Tensor {
        let ds = dataset
        let x = reuse(&batch, [indices.count] + ds.sampleShape)
        labels.removeAll(keepingCapacity: true)
        for (i, index) in indices.enumerated() {
            let dst = x.data + i * ds.sampleSize
            if let augmentation {
                augmentation.apply(dataset: ds, index: index, epoch: epoch, seed: seed, padValue: padValue, into: dst)
            } else {
                ds.copySample(index, into: dst)
            }
            labels.append(ds.labels[index])
        }
        if let failure = ds.takeFailure() { throw DataError(failure) }   // streamed files only
        return x
    }
}
