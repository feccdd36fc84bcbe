// Order-independent sums: the arithmetic behind exact mode's world-size invariance.
//
// Float addition is not associative, so a sum over samples depends on how the samples were
// split among ranks and on the order MPI combines them. Integer addition is associative: a value
// rounded once to a fixed-point integer can be added in any order, on any number of ranks, by
// any all-reduce algorithm, and give the same bits. `ExactSum` is used for small vectors
// (batch-norm statistics, loss and metric sums); the gradients, large, are added in a fixed tree
// of chunk sums instead (ChunkTree.swift), which costs no integer conversion.
//
// * `ExactSum` needs no agreed scale. A Double is rounded to a multiple of 2^-64 and stored as
//   `limbs` signed digits of at most 2^31 in magnitude, held in Int64 words (digit i weighs
//   2^(32i-64)), plus one word counting non-finite inputs. Digit-wise sums of up to 2^31 values
//   cannot overflow. Range |v| < 2^94; the rounding error
//   is at most 2^-65 per value added, so a sum of n values is within n·2^-65 of the exact sum of
//   the Doubles given (then rounded once more when read back as a Double). A value's words lie
//   together (`add`), or, for batches, digit-major: digit d of value i at d·count + i
//   (`addColumns`, `columnValue`), which lets one chunk's values be added with vector arithmetic.

import CKernels

public enum ExactSum {
    /// 32-bit digits per value (CKernels' lockstep_exact_add_columns is written for 5 digits with
    /// a lowest unit of 2^-64: change both together).
    public static let limbs = 5
    /// Int64 words per value: the digits and the non-finite counter.
    public static let width = limbs + 1
    /// The value of the lowest digit's unit is 2^-fractionBits.
    public static let fractionBits = 64
    /// Values at or beyond this magnitude count as non-finite (they would overflow the top digit).
    public static let limit = 0x1p94

    /// Adds `v` into the `width` words at `acc`.
    @inline(never)
    public static func add(_ v: Double, into acc: UnsafeMutablePointer<Int64>) { addOne(v, into: acc) }

    /// Digit-major batches (batch norm's per-chunk statistics): values[i]'s words go to
    /// acc[d·count + i] for d < width (the digits, then the non-finite counter), so that one
    /// call adds a whole chunk's values with vector arithmetic. The words are the ones `add`
    /// gives each value: digit d = round(r·2^(64−32d)) by adding 1.5·2^52, read from the bit
    /// pattern (no conversion instruction), r reduced by it exactly, from the top digit down.
    public static func addColumns(_ values: UnsafePointer<Double>, count: Int, into acc: UnsafeMutablePointer<Int64>) {
        // In C (CKernels), vectorised at each instruction-set level: batch norm's exact
        // statistics add 2c values per chunk, and Swift's SIMD4<Double> (two SSE registers at the
        // baseline target) made them 2-3% of the MLP's step.
        lockstep_exact_add_columns(-1, values, count, acc)
    }

    /// Value `index` of digit-major sums of `count` values (addColumns's layout).
    public static func columnValue(_ acc: UnsafePointer<Int64>, count: Int, index: Int) -> Double {
        value(acc + index, stride: count)
    }

    @inline(__always)
    static func addOne(_ v: Double, into acc: UnsafeMutablePointer<Int64>) {
        guard v.isFinite, abs(v) < limit else { acc[limbs] += 1; return }
        // Peel the digits off from the top: t = v rounded to a multiple of the digit's unit 2^u
        // by adding and subtracting 1.5·2^(u+52) (one rounding, ties to even, valid while
        // |v| < 2^(u+51)); v − t is exact, and |v| ≤ 2^(u−1) after it, within the next digit's
        // range. The lowest digit's rounding is the only loss: v is held to the nearest multiple
        // of 2^-64. Digits are signed, |digit| ≤ 2^31; branch-free, so a batch pipelines.
        var r = v
        let t4 = (r + 0x1.8p116) - 0x1.8p116; r -= t4   // unit 2^64
        let t3 = (r + 0x1.8p84) - 0x1.8p84; r -= t3     // unit 2^32
        let t2 = (r + 0x1.8p52) - 0x1.8p52; r -= t2     // unit 2^0
        let t1 = (r + 0x1.8p20) - 0x1.8p20; r -= t1     // unit 2^-32
        let t0 = (r + 0x1.8p-12) - 0x1.8p-12            // unit 2^-64
        acc[4] &+= Int64(t4 * 0x1p-64)
        acc[3] &+= Int64(t3 * 0x1p-32)
        acc[2] &+= Int64(t2)
        acc[1] &+= Int64(t1 * 0x1p32)
        acc[0] &+= Int64(t0 * 0x1p64)
    }

    /// The sum held in `width` words, as a Double (NaN when any input was non-finite).
    @inline(__always)
    public static func value(_ acc: UnsafePointer<Int64>) -> Double { value(acc, stride: 1) }

    /// The sum whose words are acc[0], acc[stride], acc[2·stride], ... (`width` of them).
    @inline(__always)
    static func value(_ acc: UnsafePointer<Int64>, stride: Int) -> Double {
        if acc[limbs * stride] != 0 { return .nan }
        // Normalise carries so that digits 0..<limbs-1 lie in [0, 2^32), then combine from the top:
        // the result depends only on the integer held, never on how it was accumulated.
        let (d0, c0) = (acc[0] & 0xFFFF_FFFF, acc[0] >> 32)   // arithmetic shift: floor division
        let t1 = acc[stride] &+ c0
        let (d1, c1) = (t1 & 0xFFFF_FFFF, t1 >> 32)
        let t2 = acc[2 * stride] &+ c1
        let (d2, c2) = (t2 & 0xFFFF_FFFF, t2 >> 32)
        let t3 = acc[3 * stride] &+ c2
        let (d3, c3) = (t3 & 0xFFFF_FFFF, t3 >> 32)
        let d4 = acc[4 * stride] &+ c3
        var v = Double(d4) * 0x1p64
        v += Double(d3) * 0x1p32
        v += Double(d2)
        v += Double(d1) * 0x1p-32
        v += Double(d0) * 0x1p-64
        return v
    }

    /// Element-wise: `values.count` sums laid out as consecutive groups of `width` words.
    public static func values(_ acc: UnsafeBufferPointer<Int64>) -> [Double] {
        precondition(acc.count % width == 0)
        return (0..<(acc.count / width)).map { value(acc.baseAddress! + $0 * width) }
    }
}
