// Exact mode's gradient synchronisation (the default): every rank holds whole chunks of each
// micro-batch, the chunk sums are added in the fixed chunk tree across ranks
// (ExactGradientReducer), and the step's loss and metric words, summed in integers
// (TensorCore's ExactSum), travel in a small all-reduce with the stop flag. The bits do not
// depend on the number of ranks, on buckets or on sharding.
import Collectives
import Datasets
import NN
import Optimizers
import TensorCore

final class ExactSync: GradientSync {
    let update: ParameterUpdate
    let reducer: ExactGradientReducer
    let chunk: Int?
    let bucketBytes: Int
    var collectiveSeconds = 0.0
    var probe: StepProbe?
    /// The step's loss (ExactSum words), correct and sample counts, then the stop flag.
    private var words = [Int64](repeating: 0, count: ExactSum.width + 3)
    private var plan: StepPlan?
    private var microBatch = 0
    private var arena: Arena { update.arena }
    private var communicator: TimedCommunicator { update.communicator }
    var reduction: String { reducer.reduction }

    init(update: ParameterUpdate, chunk: Int, bucketBytes: Int, sharedMemory: Bool = true) {
        self.update = update
        self.chunk = chunk
        self.bucketBytes = bucketBytes
        reducer = ExactGradientReducer(arena: update.arena, sharedMemory: sharedMemory)
    }

    func begin(_ plan: StepPlan, stop: Bool) throws {
        self.plan = plan
        microBatch = 0
        arena.useChunkSlots(plan.localChunks)
        arena.zeroSlots(plan.localChunks)
        words = [Int64](repeating: 0, count: words.count)
        words[words.count - 1] = stop ? 1 : 0
        try reducer.beginStep(communicator: communicator, shards: update.shards)
        if let first = plan.microBatches.first { try reducer.beginMicroBatch(first, bucketBytes: plan.microBatches.count == 1 ? bucketBytes : 0) }
    }

    var layerHook: ((Int) throws -> Void)? {
        guard bucketBytes > 0 else { return nil }
        let reducer = self.reducer
        return { try reducer.layerFinished(start: $0) }
    }

    /// After each micro-batch's backward: its words; every micro-batch but the last is reduced
    /// here, so that the next one's chunk sums can reuse the slots and blocks.
    func add(_ r: LossResult, sampleLosses: [Double]) throws {
        words.withUnsafeMutableBufferPointer { e in
            for l in sampleLosses { ExactSum.add(l, into: e.baseAddress!) }
        }
        words[ExactSum.width] += Int64(r.correct)
        words[ExactSum.width + 1] += Int64(r.count)
        microBatch += 1
        if let parts = plan?.microBatches, microBatch < parts.count {
            try reduceMicroBatch()
            try reducer.beginMicroBatch(parts[microBatch], bucketBytes: microBatch == parts.count - 1 ? bucketBytes : 0)
        }
    }

    /// The global sums on rank 0 and zeros elsewhere, so that summing over ranks is exact; a
    /// non-finite loss gives NaN gradients and a NaN loss on every rank alike.
    func finish() throws -> (total: LossResult, stop: Bool?) {
        try reduceMicroBatch()
        let t0 = monotonicSeconds(), c0 = communicator.seconds
        try words.withUnsafeMutableBufferPointer { try communicator.allReduce($0, op: .sum) }
        collectiveSeconds += communicator.seconds - c0
        probe?.exactSumSeconds += monotonicSeconds() - t0 - (communicator.seconds - c0)
        let w = ExactSum.width, stop = words[w + 2] > 0
        if words[ExactSum.limbs] != 0 {   // the loss words' non-finite counter
            arena.summedGradientBase = nil   // this rank's own gradients, not the shared sum
            arena.flatGrads.update(repeating: .nan)
            return (LossResult(lossSum: .nan, correct: 0, count: 0), stop)
        }
        let lossSum = words.withUnsafeBufferPointer { ExactSum.value($0.baseAddress!) }
        let total = communicator.rank == 0 ? LossResult(lossSum: lossSum, correct: Int(words[w]), count: Int(words[w + 1]))
                                           : LossResult(lossSum: 0, correct: 0, count: 0)
        return (total, stop)
    }

    /// Reduces the micro-batch whose backward just ended (the step's last: in `finish`).
    private func reduceMicroBatch() throws {
        let t0 = monotonicSeconds(), c0 = communicator.seconds
        try reducer.finishMicroBatch()
        let collective = communicator.seconds - c0   // counts as the gradient all-reduce; the rest is arithmetic
        collectiveSeconds += collective
        probe?.exactSumSeconds += monotonicSeconds() - t0 - collective
    }

    func update(rate: Float) throws -> Bool? {
        try update.apply(rate: rate, stopInSpare: false, probe: probe, seconds: &collectiveSeconds)
    }
}
