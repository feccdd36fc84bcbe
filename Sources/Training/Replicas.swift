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
    func synchronizeGradients(_ plan: StepPlan, local: LossResult, exactSums: inout [Int64]) throws -> LossResult {
        if config.train.exact {
            return try reduceExactly(plan, exactSums: &exactSums)
        }
        if worldSize > 1 {
            try reduceInFloat()
        } else {
            stopAgreed = localStopRequest
        }
        return local
    }

    /// Exact mode: chunk slots summed in integers (ExactGradientReducer).
    func reduceExactly(_ plan: StepPlan, exactSums: inout [Int64]) throws -> LossResult {
        let w = ExactSum.width
        let t0 = monotonicSeconds(), c0 = communicator.seconds
        let outcome = try exactReducer.reduce(slotCount: plan.localChunks, totalChunks: plan.totalChunks, stop: localStopRequest,
                                              extras: &exactSums, communicator: communicator)
        // Its two collectives count as the gradient all-reduce; the rest is arithmetic.
        let collective = communicator.seconds - c0
        gradientAllReduceSeconds += collective
        probe?.exactSumSeconds += monotonicSeconds() - t0 - collective
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

    /// Stops the job when replicas' parameters are no longer bit-identical.
    public func checkReplicas() throws {
        guard worldSize > 1 else { return }
        var fp = Fingerprint()
        fp.add(floats: UnsafeBufferPointer(model.parameters.flatValues))
        do {
            try communicator.checkSame(fp.value, what: "parameters")
        } catch let e as CollectiveError where e.message.hasPrefix("parameters differ") {
            throw CollectiveError(failedRank: rank, message: "replicas diverged at step \(step): parameter checksums differ between ranks")
        }
    }
}

public struct TrainingDiverged: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
