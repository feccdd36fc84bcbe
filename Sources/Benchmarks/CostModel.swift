// The all-reduce cost model: timing MPI_Allreduce (or any communicator's) at message sizes from
// 8 B to 64 MB, and fitting the ring model T(N) = 2(p−1)α + 2(p−1)/p·N·β to the timings
// (bench/cost-model projects training steps at p nodes from the fit).
import Collectives
import Foundation
import TensorCore

public struct AllReduceTiming: Equatable, Sendable {
    public var bytes: Int
    /// Median over repetitions of the slowest rank's time for one all-reduce, in seconds.
    public var seconds: Double
    public var repetitions: Int

    public init(bytes: Int, seconds: Double, repetitions: Int) {
        (self.bytes, self.seconds, self.repetitions) = (bytes, seconds, repetitions)
    }
}

/// Latency α (s) and inverse bandwidth β (s/byte) of one link in the ring model.
public struct RingModel: Equatable, Sendable {
    public var alpha: Double
    public var beta: Double

    public init(alpha: Double, beta: Double) { (self.alpha, self.beta) = (alpha, beta) }

    /// The ring all-reduce of `bytes` over `ranks` ranks: 2(p−1) latencies, and each rank sends
    /// and receives 2(p−1)/p of the message.
    public func allReduceSeconds(bytes: Double, ranks: Int) -> Double {
        guard ranks > 1 else { return 0 }
        let p = Double(ranks)
        return 2 * (p - 1) * alpha + 2 * (p - 1) / p * bytes * beta
    }

    /// Fits α and β to timings at `ranks` ranks: a line T = a + b·N by least squares on the
    /// relative error (each point weighted by 1/T², so 8-byte latencies count as much as 64 MB
    /// transfers), then α = a / 2(p−1) and β = b·p / 2(p−1).
    public static func fit(_ timings: [AllReduceTiming], ranks: Int) -> RingModel? {
        guard ranks > 1, timings.count >= 2 else { return nil }
        var sw = 0.0, sx = 0.0, sy = 0.0, sxx = 0.0, sxy = 0.0
        for t in timings where t.seconds > 0 {
            let w = 1 / (t.seconds * t.seconds), x = Double(t.bytes), y = t.seconds
            sw += w; sx += w * x; sy += w * y; sxx += w * x * x; sxy += w * x * y
        }
        let det = sw * sxx - sx * sx
        guard det > 0 else { return nil }
        let b = (sw * sxy - sx * sy) / det
        let a = (sy - b * sx) / sw
        let p = Double(ranks)
        return RingModel(alpha: max(a, 0) / (2 * (p - 1)), beta: max(b, 0) * p / (2 * (p - 1)))
    }
}

/// Message sizes from 8 B to 64 MB in factors of 4 (8 B, 32 B, ..., 32 MB), and 64 MB.
public let allReduceBenchmarkSizes: [Int] = (0..<12).map { 8 << (2 * $0) } + [64 << 20]

/// Times float all-reduces of each size: a barrier, then one all-reduce, per repetition; the slowest
/// rank's time of each repetition; the median. Repetitions fill about `secondsPerSize` (all
/// ranks agree on the count), between 5 and 2,000.
public func measureAllReduce(_ comm: Communicator, sizes: [Int] = allReduceBenchmarkSizes, secondsPerSize: Double = 0.3,
                             progress: ((AllReduceTiming) -> Void)? = nil) throws -> [AllReduceTiming] {
    var results = [AllReduceTiming]()
    for bytes in sizes {
        var buffer = [Float](repeating: 1, count: max(bytes / 4, 1))
        func once() throws -> Double {
            try comm.barrier()
            let t0 = monotonicSeconds()
            try buffer.withUnsafeMutableBufferPointer { try comm.allReduce($0, op: .sum) }
            return monotonicSeconds() - t0
        }
        for _ in 0..<3 { _ = try once() }
        var probe = [try once()]
        try comm.allReduce(&probe, op: .max)
        var reps = [Double(min(max(Int(secondsPerSize / max(probe[0], 1e-7)), 5), 2000))]
        try comm.allReduce(&reps, op: .max)   // every rank runs the same number
        var times = [Double]()
        for _ in 0..<Int(reps[0]) { times.append(try once()) }
        try comm.allReduce(&times, op: .max)
        let timing = AllReduceTiming(bytes: max(bytes / 4, 1) * 4, seconds: median(times), repetitions: times.count)
        progress?(timing)
        results.append(timing)
    }
    return results
}
