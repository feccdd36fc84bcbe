// Gradient synchronisation: how a step's gradients become the global sum on every rank, and how
// the parameters are then updated. The strategy is chosen once, when the trainer is built
// (`makeGradientSync`, the one place that reads train.exact); the step only calls
//   begin → { forward, backward, add } per micro-batch → finish → update.
// Two implementations: `ExactSync` (the default: fixed chunks added in a fixed tree, the same
// bits on any number of ranks; ExactSync.swift) and `FloatSync` (train.exact: false: one float
// all-reduce, whose bits depend on how samples were split; here). Overlap buckets and ZeRO-1
// sharding are parameters of either, not branches of the step. Collectives on one rank are the
// identity, so neither tests the number of ranks.
import Collectives
import Datasets
import NN
import Optimizers
import TensorCore

protocol GradientSync: AnyObject {
    /// Samples per chunk (exact mode's fixed chunks); nil: the local batch is one chunk.
    var chunk: Int? { get }
    /// Seconds in gradient collectives (and a sharded step's all-gather) since the last reset.
    var collectiveSeconds: Double { get set }
    /// How the last step's gradients were summed over the ranks, for reports.
    var reduction: String { get }
    var probe: StepProbe? { get set }
    /// Before the step's first micro-batch (again when a step runs again): clears gradients;
    /// `stop` is this rank's wish to stop after the step.
    func begin(_ plan: StepPlan, stop: Bool) throws
    /// After each layer's backward in the step's last micro-batch (overlap buckets), or nil.
    var layerHook: ((Int) throws -> Void)? { get }
    /// After a micro-batch's backward: its loss sums (`sampleLosses`: its per-sample losses).
    func add(_ r: LossResult, sampleLosses: [Double]) throws
    /// Sums the gradients over chunks and ranks and agrees on stopping (nil when only `update`
    /// can tell). The loss sums are this rank's share: summing over ranks gives the global ones.
    func finish() throws -> (total: LossResult, stop: Bool?)
    /// Clips (optimizer.clip_norm) and updates the parameters; returns the stop flag when the
    /// update is what agreed it.
    func update(rate: Float) throws -> Bool?
}

/// What both strategies share: the update, with clipping by the optimizer, of all parameters
/// or (ZeRO-1) of this rank's block, followed by the all-gather of the blocks.
struct ParameterUpdate {
    let communicator: TimedCommunicator
    let arena: Arena
    let optimizer: Optimizer
    let clipNorm: Float?
    let shards: ShardLayout?

    /// `stopInSpare`: the float path's stop flag rides in the spare float after the values
    /// (summed onto the last rank by the reduce-scatter); returns it then.
    func apply(rate: Float, stopInSpare: Bool, probe: StepProbe?, seconds: inout Double) throws -> Bool? {
        let timed = { (body: () throws -> Void) in
            let t0 = monotonicSeconds()
            defer { probe?.add(.optimizer, monotonicSeconds() - t0) }
            try body()
        }
        guard let shards else {
            if clipNorm != nil, let shared = arena.summedGradientBase {
                // Clipping scales the sum in place: each rank scales its own copy, not the one
                // the ranks share (a sharded step scales only its own shard, which no other reads).
                arena.flatGrads.baseAddress!.update(from: shared, count: arena.count)
                arena.summedGradientBase = nil
            }
            try timed { try optimizer.update(rate: rate, clipNorm: clipNorm) }
            return nil
        }
        let mine = shards.ranges[communicator.rank]
        try timed {
            try optimizer.update(rate: rate, within: mine, clipNorm: clipNorm) { words in
                var sum = words
                try communicator.allReduce(&sum)
                return sum
            }
        }
        let t0 = monotonicSeconds()
        defer { seconds += monotonicSeconds() - t0 }
        guard stopInSpare else {
            try communicator.allGather(arena.flatValues, counts: shards.counts)
            return nil
        }
        let values = arena.valuesWithSpare, last = communicator.size - 1
        values[values.count - 1] = communicator.rank == last ? arena.gradsWithSpare[arena.count] : 0
        var counts = shards.counts
        counts[last] += values.count - arena.count
        try communicator.allGather(values, counts: counts)
        return values[values.count - 1] > 0
    }
}

/// train.exact: false: one float all-reduce of the gradients (or reduce-scatter when sharded, or
/// buckets overlapping backward), with the stop flag in the spare float after them.
final class FloatSync: GradientSync {
    let update: ParameterUpdate
    let bucketBytes: Int
    var collectiveSeconds = 0.0
    var probe: StepProbe?
    var chunk: Int? { nil }
    private var buckets: GradientBuckets?
    private var local = LossResult(lossSum: 0, correct: 0, count: 0)
    private var arena: Arena { update.arena }
    private var communicator: TimedCommunicator { update.communicator }
    var reduction: String {
        if communicator.size == 1 { return "one rank, no reduction (float sums)" }
        if update.shards != nil { return "float reduce-scatter, then the sharded update's all-gather (MPI)" }
        return bucketBytes > 0 ? "float all-reduces in buckets of \(bucketBytes) bytes, overlapping backward (MPI)" : "one float all-reduce (MPI)"
    }

    init(update: ParameterUpdate, bucketBytes: Int) {
        self.update = update
        self.bucketBytes = bucketBytes
    }

    func begin(_ plan: StepPlan, stop: Bool) {
        arena.zeroGrads()
        let spare = arena.gradsWithSpare
        spare[spare.count - 1] = stop ? 1 : 0
        buckets = bucketBytes > 0 ? GradientBuckets(grads: spare, bucketBytes: bucketBytes, communicator: communicator) : nil
        local = LossResult(lossSum: 0, correct: 0, count: 0)
    }

    var layerHook: ((Int) throws -> Void)? { buckets.map { b in { try b.layerFinished(start: $0) } } }

    func add(_ r: LossResult, sampleLosses: [Double]) {
        local.lossSum += r.lossSum; local.correct += r.correct; local.count += r.count
    }

    func finish() throws -> (total: LossResult, stop: Bool?) {
        let spare = arena.gradsWithSpare
        if let shards = update.shards {
            var counts = shards.counts
            counts[counts.count - 1] += spare.count - arena.count
            let t0 = monotonicSeconds()
            try communicator.reduceScatter(spare, counts: counts)
            collectiveSeconds += monotonicSeconds() - t0
            return (local, nil)   // the flag returns with the all-gather
        }
        if buckets == nil { try probe?.waitForSlowestRank(communicator) }
        let t0 = monotonicSeconds()
        if let buckets { try buckets.finish() } else { try communicator.allReduce(spare, op: .sum) }
        let dt = monotonicSeconds() - t0   // with buckets: the part backward did not hide
        collectiveSeconds += dt
        if buckets == nil { try probe?.compareWithBareAllReduce(dt, of: spare, communicator) }
        return (local, spare[spare.count - 1] > 0)
    }

    func update(rate: Float) throws -> Bool? {
        try update.apply(rate: rate, stopInSpare: true, probe: probe, seconds: &collectiveSeconds)
    }
}
