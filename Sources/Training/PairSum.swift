// Exact mode's pair case (ExactGradients.swift, step 2): whether this MPI adds two floats as IEEE
// does, so that its all-reduce of two ranks' blocks gives the chunk tree's root bit for bit.
import Collectives

/// The pair case's start-up self-test: both ranks all-reduce values chosen to expose a sum that
/// is not IEEE's (subnormals and their sums, signed zeros, cancellation, magnitudes far apart,
/// results that round to even), and compare with the sums they compute themselves from both
/// ranks' values. Both ranks agree on the answer (a max all-reduce of the failure flag).
enum PairSum {
    static func values(rank: Int) -> [Float] {
        var v: [Float] = [0, -0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .leastNormalMagnitude, 0x1p-140, 1, -1, 0x1p24, 3, .greatestFiniteMagnitude / 2]
        for i in 0..<53 {   // both signs, exponents from -149 to 100, mantissas with low bits set
            let e = -149 + (i * 47 + rank * 13) % 250
            v.append(Float(sign: (i + rank) % 3 == 0 ? .minus : .plus, exponent: e, significand: 1 + Float(i * 2 + 1 + rank) * 0x1p-23))
        }
        return rank == 0 ? v : v.map { -$0 * 0.75 }.reversed() + []
    }

    static func isExact(_ communicator: Communicator) throws -> Bool {
        var mine = values(rank: communicator.rank)
        let want = zip(values(rank: 0), values(rank: 1)).map { $0 + $1 }
        try mine.withUnsafeMutableBufferPointer { try communicator.allReduce($0, op: .sum) }
        var failed: [Int64] = [mine.map(\.bitPattern) == want.map(\.bitPattern) ? 0 : 1]
        try communicator.allReduce(&failed, op: .max)
        return failed[0] == 0
    }
}
