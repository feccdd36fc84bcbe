// The step probe: what `lockstep bench` measures inside training steps (time per phase, the
// gradient all-reduce against a bare one, the wait for the slowest rank). Training runs without
// one; the trainer only calls it where a measurement belongs.
import Collectives
import TensorCore

public final class StepProbe {
    public enum Phase { case data, loss, zeroing, optimizer }
    /// Seconds per phase since the last reset.
    public private(set) var dataSeconds = 0.0, lossSeconds = 0.0, zeroingSeconds = 0.0, optimizerSeconds = 0.0
    /// Exact mode: seconds spent finding scales, quantising chunk slots and decoding the sums.
    public var exactSumSeconds = 0.0
    /// When set, each fast-path gradient all-reduce is timed and followed by a bare all-reduce of
    /// the same bytes on the underlying communicator, and preceded by a barrier that separates
    /// waiting for the slowest rank from the all-reduce itself.
    public var comparesAllReduce = false
    public private(set) var allReduceTimes: [Double] = []
    public private(set) var bareAllReduceTimes: [Double] = []
    public private(set) var skewWaitSeconds = 0.0
    private var scratch: [Float] = []

    public init() {}

    public func reset() {
        dataSeconds = 0; lossSeconds = 0; zeroingSeconds = 0; optimizerSeconds = 0; exactSumSeconds = 0
        allReduceTimes = []; bareAllReduceTimes = []; skewWaitSeconds = 0
    }

    func add(_ phase: Phase, _ seconds: Double) {
        switch phase {
        case .data: dataSeconds += seconds
        case .loss: lossSeconds += seconds
        case .zeroing: zeroingSeconds += seconds
        case .optimizer: optimizerSeconds += seconds
        }
    }

    func waitForSlowestRank(_ communicator: TimedCommunicator) throws {
        guard comparesAllReduce else { return }
        let t0 = monotonicSeconds()
        try communicator.inner.barrier()
        skewWaitSeconds += monotonicSeconds() - t0
    }

    func compareWithBareAllReduce(_ seconds: Double, of buffer: UnsafeMutableBufferPointer<Float>, _ communicator: TimedCommunicator) throws {
        guard comparesAllReduce else { return }
        allReduceTimes.append(seconds)
        // The same bytes, in the same cache state, on the inner communicator (MPI_Allreduce).
        if scratch.count != buffer.count { scratch = [Float](repeating: 0, count: buffer.count) }
        _ = scratch.withUnsafeMutableBufferPointer { $0.update(from: buffer) }
        try communicator.inner.barrier()
        let t0 = monotonicSeconds()
        try scratch.withUnsafeMutableBufferPointer { try communicator.inner.allReduce($0, op: .sum) }
        bareAllReduceTimes.append(monotonicSeconds() - t0)
    }
}

extension Trainer {
    /// Runs `body`, adding its seconds to `phase` when a probe is attached.
    @inline(__always)
    func measured<R>(_ phase: StepProbe.Phase, _ body: () throws -> R) rethrows -> R {
        guard let probe else { return try body() }
        let t0 = monotonicSeconds()
        defer { probe.add(phase, monotonicSeconds() - t0) }
        return try body()
    }
}
