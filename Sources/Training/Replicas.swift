// Keeping replicas in lockstep: the start-up invariants (same config, layout and, in exact mode,
// BLAS kernel everywhere; rank 0's initial state), summing each step's gradients over ranks (the
// fast path's float all-reduce, or exact mode's integer sums) with the stop flag, and checking
// that the replicas still hold the same parameters.
import Collectives
import Datasets
import Foundation
import NN
import TensorCore

extension Trainer {
    /// Start-up invariants: every rank runs the same config and model layout, and starts from
    /// rank 0's parameters and buffers.
    func synchronizeStart() throws {
        var fp = Fingerprint()
        fp.add(config.resolvedYAML)
        fp.add(model.layoutDescription)
        try communicator.checkSame(fp.value, what: "the configuration or model layout")
        if config.train.exact {
            let chunks = (config.train.globalBatch + config.train.chunk - 1) / config.train.chunk
            if chunks < worldSize {
                console.line("lockstep: exact mode: a global batch of \(config.train.globalBatch) in chunks of \(config.train.chunk) keeps only \(chunks) of \(worldSize) ranks busy; lower train.chunk or raise train.global_batch")
            }
            // Exact mode's bits come from one sgemm kernel: every rank must run the same one, and
            // one BLAS thread per rank (a threaded sgemm may split its work differently).
            if blasThreadCount() > 1 {
                setBLASThreadCount(1)
                console.line("lockstep: exact mode runs OpenBLAS with one thread per rank (start more ranks to use more cores, or set train.exact: false)")
            }
            var core = Fingerprint()
            core.add(blasCoreName())
            do {
                try communicator.checkSame(core.value, what: "the OpenBLAS kernel")
            } catch is CollectiveError {
                throw CollectiveError(failedRank: rank, message: "exact mode needs the same OpenBLAS kernel on every rank, and this rank's (\(blasCoreName())) differs from another's; set OPENBLAS_CORETYPE to one kernel every node can run, or set train.exact: false")
            }
        }
        try communicator.broadcast(UnsafeMutableRawBufferPointer(model.parameters.flatValues), root: 0)
        try communicator.broadcast(UnsafeMutableRawBufferPointer(model.buffers.flatValues), root: 0)
    }

    /// Sums this step's gradients over chunks and ranks into the gradient arena and agrees on
    /// stopping. `exactSums` holds the step's loss (ExactSum words), correct and sample counts in
    /// exact mode; they ride along. Returns the step's loss sums: this rank's on the fast path;
    /// in exact mode the global ones on rank 0 and zeros elsewhere, so that summing over ranks
    /// gives the global sums exactly.
    func synchronizeGradients(_ plan: StepPlan, local: LossResult, exactSums: inout [Int64], overlap: Overlap = .none) throws -> LossResult? {
        if config.train.exact { return try reduceExactly(plan, exactSums: &exactSums) }
        if case .fast(let buckets) = overlap {
            let t0 = monotonicSeconds()
            try buckets.finish()
            gradientAllReduceSeconds += monotonicSeconds() - t0   // the part backward did not hide
            stopAgreed = model.parameters.gradsWithSpare.last! > 0
        } else if let shards {
            try reduceScatterInFloat(shards)   // the stop flag is agreed in shardedUpdate
        } else if worldSize > 1 {
            try reduceInFloat()
        } else {
            stopAgreed = localStopRequest
        }
        return local
    }

    /// How this step's gradient reduction overlaps backward (train.bucket_mb > 0 on several ranks).
    enum Overlap {
        case none
        case fast(GradientBuckets)   // the stop flag is already in the spare float
        case exact                   // exactReducer has begun
    }

    /// Sets up this step's overlapped reduction, and the hook to run after each layer's backward
    /// in the last micro-batch.
    func beginOverlap(_ plan: StepPlan, words: Int) -> (Overlap, ((Int) throws -> Void)?) {
        guard worldSize > 1, config.train.bucketMB > 0 else { return (.none, nil) }
        let bytes = Int(config.train.bucketMB * 1_048_576)
        if config.train.exact {
            let reducer = exactReducer   // begun in zeroGradients
            return (.exact, { try reducer.layerFinished(start: $0) })
        }
        let spare = model.parameters.gradsWithSpare
        spare[spare.count - 1] = localStopRequest ? 1 : 0
        let buckets = GradientBuckets(grads: spare, bucketBytes: bytes, communicator: communicator)
        return (.fast(buckets), { try buckets.layerFinished(start: $0) })
    }

    /// Exact mode: chunk sums in integers (ExactGradientReducer). Nil when the step must run
    /// again because a tensor outgrew its scale (every rank learns it alike).
    func reduceExactly(_ plan: StepPlan, exactSums: inout [Int64]) throws -> LossResult? {
        let w = ExactSum.width
        let t0 = monotonicSeconds(), c0 = communicator.seconds
        let outcome = try exactReducer.finish(stop: localStopRequest, extras: &exactSums, shards: shards)
        // Its two collectives count as the gradient all-reduce; the rest is arithmetic.
        let collective = communicator.seconds - c0
        gradientAllReduceSeconds += collective
        probe?.exactSumSeconds += monotonicSeconds() - t0 - collective
        if outcome.retry { return nil }
        stopAgreed = outcome.stop
        let lossSum = outcome.nonFinite ? .nan : exactSums.withUnsafeBufferPointer { ExactSum.value($0.baseAddress!) }
        guard lossSum.isFinite else {
            throw TrainingDiverged(message: "training diverged: the loss or a gradient is not finite at step \(step) (epoch \(step / sampler.stepsPerEpoch + 1)); lower optimizer.lr, add schedule.warmup_epochs or set optimizer.clip_norm")
        }
        return rank == 0 ? LossResult(lossSum: lossSum, correct: Int(exactSums[w]), count: Int(exactSums[w + 1]))
                         : LossResult(lossSum: 0, correct: 0, count: 0)
    }

    /// The fast path: one float all-reduce (sum) of the gradients, whose bits depend on the
    /// order of addition. The stop flag rides in the spare float after the gradients.
    func reduceInFloat() throws {
        try probe?.waitForSlowestRank(communicator)
        let spare = model.parameters.gradsWithSpare
        spare[spare.count - 1] = localStopRequest ? 1 : 0
        let t0 = monotonicSeconds()
        try communicator.allReduce(spare, op: .sum)
        let dt = monotonicSeconds() - t0
        gradientAllReduceSeconds += dt
        try probe?.compareWithBareAllReduce(dt, of: spare, communicator)
        stopAgreed = spare.last! > 0
    }

    /// This rank's wish to stop: a signal arrived, or `stopAtStep` is reached after this step.
    var localStopRequest: Bool { StopSignal.requested || step + 1 == stopAtStep }

    /// Stops the job when replicas' parameters are no longer bit-identical, naming the rank(s)
    /// that differ from the majority and the first tensor where they do.
    public func checkReplicas() throws {
        guard worldSize > 1 else { return }
        // Every rank's checksum of every parameter tensor, gathered with one all-reduce: each
        // rank fills its own row (as two exactly representable halves), the others add zeros.
        let tensors = model.parameters.entries
        var table = [Double](repeating: 0, count: worldSize * tensors.count * 2)
        for (t, p) in tensors.enumerated() {
            var fp = Fingerprint()
            fp.add(floats: UnsafeBufferPointer(p.values))
            table[(rank * tensors.count + t) * 2] = Double(fp.value >> 32)
            table[(rank * tensors.count + t) * 2 + 1] = Double(fp.value & 0xFFFF_FFFF)
        }
        try communicator.allReduce(&table)
        let rows = (0..<worldSize).map { r in Array(table[(r * tensors.count * 2)..<((r + 1) * tensors.count * 2)]) }
        guard let message = Self.divergence(rows, tensorNames: tensors.map(\.name)) else { return }
        throw CollectiveError(failedRank: rank, message: "replicas diverged at step \(step): \(message)")
    }

    /// Nil when all rows agree; otherwise which ranks differ from the majority and where first.
    static func divergence(_ rows: [[Double]], tensorNames: [String]) -> String? {
        guard rows.contains(where: { $0 != rows[0] }) else { return nil }
        var counts: [[Double]: Int] = [:]
        for row in rows { counts[row, default: 0] += 1 }
        let top = counts.values.max()!
        let majorities = counts.filter { $0.value == top }
        func firstTensor(_ a: [Double], _ b: [Double]) -> String {
            for t in 0..<tensorNames.count {
                let i = 2 * t
                if a[i] != b[i] || a[i + 1] != b[i + 1] { return tensorNames[t] }
            }
            return tensorNames[0]
        }
        guard majorities.count == 1, let majority = majorities.first?.key else {
            // No majority (two ranks, or an even split): name the groups against rank 0.
            let others = (0..<rows.count).filter { rows[$0] != rows[0] }
            let other = others[0]
            let who = others.count == 1 ? "rank \(other) holds" : "ranks \(others.map(String.init).joined(separator: ", ")) hold"
            return "\(who) parameters that differ from rank 0's, first in \(firstTensor(rows[0], rows[other])) (no majority tells which is wrong)"
        }
        let odd = (0..<rows.count).filter { rows[$0] != majority }
        let who = odd.count == 1 ? "rank \(odd[0]) holds parameters" : "ranks \(odd.map(String.init).joined(separator: ", ")) hold parameters"
        return "\(who) that differ from the other \(rows.count - odd.count) ranks', first in \(firstTensor(majority, rows[odd[0]]))"
    }
}

public struct TrainingDiverged: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
