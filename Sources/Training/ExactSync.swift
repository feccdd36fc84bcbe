// Exact mode's gradient synchronisation (the default): every rank holds whole chunks of the
// global batch, each chunk's gradient is rounded to fixed point and the integers are summed over
// chunks and ranks (ExactGradientReducer), with the step's loss and metric words riding along.
// The bits do not depend on the number of ranks, on buckets or on sharding.
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
    /// The step's loss (ExactSum words), correct and sample counts.
    private var words = [Int64](repeating: 0, count: ExactSum.width + 2)
    private var stop = false
    private var arena: Arena { update.arena }
    private var communicator: TimedCommunicator { update.communicator }

    init(update: ParameterUpdate, chunk: Int, bucketBytes: Int) {
        self.update = update
        self.chunk = chunk
        self.bucketBytes = bucketBytes
        reducer = ExactGradientReducer(arena: update.arena)
    }

    var scaleMaxima: [Float]? {
        get { reducer.scaleMaxima }
        set { reducer.scaleMaxima = newValue }
    }

    func begin(_ plan: StepPlan, stop: Bool) {
        arena.zeroGrads()
        arena.useChunkSlots(plan.localChunks)
        arena.zeroSlots(plan.localChunks)
        self.stop = stop
        words = [Int64](repeating: 0, count: words.count)
        reducer.begin(slotCount: plan.localChunks, totalChunks: plan.totalChunks, words: words.count,
                      bucketBytes: bucketBytes, communicator: communicator)
    }

    var layerHook: ((Int) throws -> Void)? {
        guard bucketBytes > 0 else { return nil }
        let reducer = self.reducer
        return { try reducer.layerFinished(start: $0) }
    }

    func add(_ r: LossResult, sampleLosses: [Double]) {
        words.withUnsafeMutableBufferPointer { e in
            for l in sampleLosses { ExactSum.add(l, into: e.baseAddress!) }
        }
        words[ExactSum.width] += Int64(r.correct)
        words[ExactSum.width + 1] += Int64(r.count)
    }

    /// The global sums on rank 0 and zeros elsewhere, so that summing over ranks is exact; a
    /// non-finite loss or gradient gives a NaN loss on every rank alike.
    func finish() throws -> (total: LossResult, stop: Bool?)? {
        let t0 = monotonicSeconds(), c0 = communicator.seconds
        let outcome = try reducer.finish(stop: stop, extras: &words, shards: update.shards)
        // Its collectives count as the gradient all-reduce; the rest is arithmetic.
        let collective = communicator.seconds - c0
        collectiveSeconds += collective
        probe?.exactSumSeconds += monotonicSeconds() - t0 - collective
        if outcome.retry { return nil }
        let w = ExactSum.width
        if outcome.nonFinite { return (LossResult(lossSum: .nan, correct: 0, count: 0), outcome.stop) }
        let lossSum = words.withUnsafeBufferPointer { ExactSum.value($0.baseAddress!) }
        let total = communicator.rank == 0 ? LossResult(lossSum: lossSum, correct: Int(words[w]), count: Int(words[w + 1]))
                                           : LossResult(lossSum: 0, correct: 0, count: 0)
        return (total, outcome.stop)
    }

    func update(rate: Float) throws -> Bool? {
        try update.apply(rate: rate, stopInSpare: false, probe: probe, seconds: &collectiveSeconds)
    }
}
