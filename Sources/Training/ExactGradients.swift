// Exact mode's gradient reduction: per-chunk gradient slots summed in integers.
//
// After backward, slot j of the arena holds chunk j's float gradient (Arena.useChunkSlots).
// 1. Each rank takes, per parameter tensor, the largest |value| over its slots; one float
//    all-reduce (max) agrees on it, and carries the stop flag and a non-finite flag (max = or).
// 2. Every rank derives the same scale 2^s per tensor from that maximum and the number of chunks
//    in the global batch (FixedPoint.scaleExponent), rounds each slot value to an Int64 and adds
//    them: integer sums are exact, so the order of chunks and ranks no longer matters.
// 3. One Int64 all-reduce (sum) adds the ranks' sums, with the step's metric words riding along;
//    each rank decodes the same integers into the same float gradients.
// Error bound: see FixedPoint (TensorCore/ExactSum.swift).
import Collectives
import NN
import TensorCore

final class ExactGradientReducer {
    let arena: Arena
    private var maxima: [Float]
    private var sums: [Int64]
    /// Elements per tile of the slot sum: 32 KiB of Int64, within L1/L2.
    static let tile = 4096

    init(arena: Arena) {
        self.arena = arena
        maxima = [Float](repeating: 0, count: arena.entries.count + 2)
        sums = []
    }

    struct Outcome {
        /// Some rank asked to stop after this step.
        var stop: Bool
        /// Some rank's gradient held an infinity or NaN (the gradients are then NaN).
        var nonFinite: Bool
    }

    /// Sums `slotCount` local slots over chunks and ranks into the arena's gradients.
    /// `extras` (Int64 words) are summed over ranks alongside.
    func reduce(slotCount: Int, totalChunks: Int, stop: Bool, extras: inout [Int64],
                communicator: Communicator) throws -> Outcome {
        let entries = arena.entries
        let flags = entries.count
        // 1. Local maxima per tensor, and whether anything was not finite.
        var nonFinite = false
        for (t, p) in entries.enumerated() {
            var m = F8(), poison = F8()
            var tail: Float = 0
            for j in 0..<slotCount {
                let src = arena.slot(j).baseAddress! + p.offset
                var i = 0
                while i + 8 <= p.count {
                    let v = UnsafeRawPointer(src + i).loadUnaligned(as: F8.self)
                    let a = v.replacing(with: -v, where: v .< 0)
                    m = m.replacing(with: a, where: a .> m)    // NaN compares false: ignored here,
                    poison += v - v                            // ...and caught here (inf − inf = NaN)
                    i += 8
                }
                while i < p.count {
                    let v = src[i]
                    if !v.isFinite { nonFinite = true } else { tail = Swift.max(tail, abs(v)) }
                    i += 1
                }
            }
            if !(poison.sum() == 0) { nonFinite = true }
            maxima[t] = Swift.max(m.max(), tail)
        }
        maxima[flags] = stop ? 1 : 0
        maxima[flags + 1] = nonFinite ? 1 : 0
        try communicator.allReduce(&maxima, op: .max)
        let outcome = Outcome(stop: maxima[flags] > 0, nonFinite: maxima[flags + 1] > 0)
        if outcome.nonFinite {
            arena.flatGrads.update(repeating: .nan)
            return outcome
        }
        // 2. Integer sums over this rank's slots, one agreed scale per tensor.
        let n = arena.count
        if sums.count != n + extras.count { sums = [Int64](repeating: 0, count: n + extras.count) }
        sums.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        let exponents = entries.indices.map { FixedPoint.scaleExponent(maximum: maxima[$0], terms: totalChunks) }
        sums.withUnsafeMutableBufferPointer { acc in
            for (t, p) in entries.enumerated() {
                // Tiles of the tensor, every slot per tile, so the Int64 tile stays in cache.
                var lo = 0
                while lo < p.count {
                    let len = min(Self.tile, p.count - lo)
                    for j in 0..<slotCount {
                        FixedPoint.accumulate(arena.slot(j).baseAddress! + p.offset + lo, len, exponent: exponents[t],
                                              into: acc.baseAddress! + p.offset + lo)
                    }
                    lo += len
                }
            }
            for (i, e) in extras.enumerated() { acc[n + i] = e }
        }
        // 3. Sum over ranks and decode.
        try communicator.allReduce(&sums, op: .sum)
        sums.withUnsafeBufferPointer { acc in
            for (t, p) in entries.enumerated() {
                FixedPoint.decode(acc.baseAddress! + p.offset, p.count, exponent: exponents[t], into: p.grad)
            }
            for i in extras.indices { extras[i] = acc[n + i] }
        }
        return outcome
    }
}
