// Keeping replicas in lockstep: the start-up invariants (same config, layout and, in exact mode,
// BLAS kernel everywhere; rank 0's initial state), choosing how gradients are summed
// (makeGradientSync), and checking that the replicas still hold the same parameters.
import Collectives
import Configuration
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
        if let chunk = sync.chunk {
            let chunks = (config.train.globalBatch + chunk - 1) / chunk
            if chunks < worldSize {
                console.line("lockstep: exact mode: a global batch of \(config.train.globalBatch) in chunks of \(chunk) keeps only \(chunks) of \(worldSize) ranks busy; lower train.chunk or raise train.global_batch")
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

    /// The gradient synchronisation for this run: the one place that reads train.exact.
    static func makeGradientSync(_ config: TrainingConfig, _ update: ParameterUpdate) -> GradientSync {
        let bytes = Int(config.train.bucketMB * 1_048_576)   // 0: no buckets
        guard let chunk = config.train.exactChunk else { return FloatSync(update: update, bucketBytes: bytes) }
        return ExactSync(update: update, chunk: chunk, bucketBytes: bytes, sharedMemory: config.train.sharedMemory)
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
