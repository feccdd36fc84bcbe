// The batch loader: a rank's share of each global batch, copied (and augmented, keyed by sample
// index and epoch) into a batch tensor that the loader owns, with its labels. With prefetch, the
// next batch is read on a background thread while the step computes (streamed data: packed
// shards, image files); what it holds is the same whichever thread filled it.
//
// Sharding follows GlobalBatchSampler: contiguous shares, lower ranks one more sample; in exact
// mode (`chunk` set) whole chunks of the batch, so that each chunk is computed the same way on
// whichever rank holds it.
import Dispatch
import Foundation
import TensorCore

/// One micro-batch as this rank sees it.
public struct LocalBatch: Sendable {
    /// Global dataset indices of this rank's samples.
    public var indices: [Int]
    /// Exact mode: how many of this rank's chunks precede this micro-batch in the step (its first
    /// chunk's gradient slot). 0 otherwise.
    public var chunkOffset: Int
    /// Exact mode: the micro-batch's chunks over all ranks, and this rank's run of them (a
    /// contiguous range of chunk positions). 0 and 0..<0 otherwise.
    public var globalChunks: Int = 0
    public var chunkRun: Range<Int> = 0..<0

    public init(indices: [Int], chunkOffset: Int, globalChunks: Int = 0, chunkRun: Range<Int> = 0..<0) {
        (self.indices, self.chunkOffset, self.globalChunks, self.chunkRun) = (indices, chunkOffset, globalChunks, chunkRun)
    }
}

/// Samples ready for the model, and their labels in the same order.
public struct LoadedBatch {
    public let x: Tensor
    public let labels: [Int32]
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
    /// Whether `prefetch` reads ahead on a background thread (else it does nothing).
    public let prefetching: Bool
    /// Two batch tensors: one the step uses, one the prefetch thread fills.
    private var buffers: [Tensor?] = [nil, nil]
    private var current = 0
    private var pending: (indices: [Int], epoch: Int, done: DispatchSemaphore, result: Result<[Int32], Error>?)?
    private let queue = DispatchQueue(label: "lockstep.prefetch")
    private let resultLock = NSLock()

    public init(dataset: ImageDataset, augmentation: Augmentation? = nil, seed: UInt64, padValue: Float, chunk: Int?, prefetch: Bool = false) {
        self.dataset = dataset
        self.augmentation = augmentation.flatMap { $0.isIdentity ? nil : $0 }
        self.seed = seed
        self.padValue = padValue
        self.chunk = chunk
        self.prefetching = prefetch
    }

    deinit { pending?.done.wait() }
    /// This rank's part of `global` (the step's dataset indices) split into `microSteps` parts.
    public func plan(_ global: ArraySlice<Int>, microSteps: Int, rank: Int, worldSize: Int) -> StepPlan {
        var micro: [LocalBatch] = []
        var offset = 0, total = 0
        for k in 0..<microSteps {
            let part = GlobalBatchSampler.shard(total: global.count, chunk: chunk, rank: k, worldSize: microSteps)
            let microBatch = global[(global.startIndex + part.lowerBound)..<(global.startIndex + part.upperBound)]
            let mine = GlobalBatchSampler.shard(total: microBatch.count, chunk: chunk, rank: rank, worldSize: worldSize)
            let indices = Array(microBatch[(microBatch.startIndex + mine.lowerBound)..<(microBatch.startIndex + mine.upperBound)])
            var local = LocalBatch(indices: indices, chunkOffset: offset)
            if let chunk {
                local.globalChunks = (microBatch.count + chunk - 1) / chunk
                local.chunkRun = GlobalBatchSampler.shard(total: local.globalChunks, rank: rank, worldSize: worldSize)
            }
            micro.append(local)
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

    /// Starts reading `indices` for `epoch` into the spare buffer, if this loader prefetches and
    /// nothing is pending; the `load` that asks for the same samples takes them.
    public func prefetch(_ indices: [Int], epoch: Int) {
        guard prefetching, pending == nil, !indices.isEmpty else { return }
        let spare = 1 - current
        let x = reuse(&buffers[spare], [indices.count] + dataset.sampleShape)
        let done = DispatchSemaphore(value: 0)
        pending = (indices, epoch, done, nil)
        queue.async { [self] in
            let result = Result { try fill(x, indices, epoch: epoch) }
            resultLock.lock()
            pending?.result = result
            resultLock.unlock()
            done.signal()
        }
    }

    /// The samples `indices` (augmented for `epoch` when the loader augments) and their labels.
    /// The tensor is reused by the next `load` but one.
    public func load(_ indices: [Int], epoch: Int) throws -> LoadedBatch {
        if let p = pending {
            p.done.wait()
            resultLock.lock()
            let result = pending!.result!
            resultLock.unlock()
            pending = nil
            if p.indices == indices && p.epoch == epoch {
                current = 1 - current
                return LoadedBatch(x: buffers[current]!, labels: try result.get())
            }
        }
        let x = reuse(&buffers[current], [indices.count] + dataset.sampleShape)
        return LoadedBatch(x: x, labels: try fill(x, indices, epoch: epoch))
    }

    private func fill(_ x: Tensor, _ indices: [Int], epoch: Int) throws -> [Int32] {
        let ds = dataset
        var labels: [Int32] = []
        labels.reserveCapacity(indices.count)
        for (i, index) in indices.enumerated() {
            let dst = x.data + i * ds.sampleSize
            if let augmentation {
                augmentation.apply(dataset: ds, index: index, epoch: epoch, seed: seed, padValue: padValue, into: dst)
            } else {
                ds.copySample(index, into: dst)
            }
            labels.append(ds.labels[index])
        }
        if let failure = ds.takeFailure() { throw DataError(failure) }   // streamed data only
        return labels
    }
}
