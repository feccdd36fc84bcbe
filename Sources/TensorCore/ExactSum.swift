// Order-independent sums: the arithmetic behind exact mode's world-size invariance.
//
// Float addition is not associative, so a sum over samples depends on how the samples were
// split among ranks and on the order MPI combines them. Integer addition is associative: a value
// rounded once to a fixed-point integer can be added in any order, on any number of ranks, by
// any all-reduce algorithm, and give the same bits. `ExactSum` is used for small vectors
// (batch-norm statistics, loss and metric sums); the gradients, large, are added in a fixed tree
// of chunk sums instead (ChunkTree.swift), which costs no integer conversion.
//
// * `ExactSum` needs no agreed scale. A Double is rounded to a multiple of 2^-64 and stored as `limbs` 32-bit digits (each
//   carrying the value's sign) held in Int64 words (digit i weighs 2^(32i-64)), plus one word counting non-finite inputs.
//   Digit-wise sums of up to 2^31 values cannot overflow. Range |v| < 2^94; the rounding error
//   is at most 2^-65 per value added, so a sum of n values is within n·2^-65 of the exact sum of
//   the Doubles given (then rounded once more when read back as a Double).

public enum ExactSum {
    /// 32-bit digits per value.
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

    /// Adds values[i] into the `width` words at acc + i·width, for i < count (batch norm's
    /// per-chunk statistics: one call per chunk rather than one per value).
    public static func add(_ values: UnsafePointer<Double>, count: Int, into acc: UnsafeMutablePointer<Int64>) {
        for i in 0..<count { addOne(values[i], into: acc + i * width) }
    }

    @inline(__always)
    static func addOne(_ v: Double, into acc: UnsafeMutablePointer<Int64>) {
        guard v.isFinite, abs(v) < limit else { acc[limbs] += 1; return }
        // r = |v|·2^64 rounded to an integer: exact scaling by a power of two, then one rounding
        // (half to even, which is symmetric, so −v adds exactly the negated digits of v).
        // (x + 2^52) − 2^52 rounds x ∈ [0, 2^52) to an integer, ties to even, in two additions
        // (`rounded(.toNearestOrEven)` is a library call on baseline x86-64); larger x are
        // integers already.
        let x = abs(v) * 0x1p64
        let r = x < 0x1p52 ? (x + 0x1p52) - 0x1p52 : x
        guard r != 0 else { return }
        // r = significand·2^k with a 53-bit integer significand; shift it into place with integer
        // arithmetic (no divisions) and split it into 32-bit digits.
        var significand = r.significandBitPattern | (1 << 52)
        var k = Int(r.exponent) - 52
        if k < 0 { significand >>= UInt64(-k); k = 0 }   // r is an integer: the bits shifted out are 0
        let q = k >> 5, b = k & 31
        let (high, low) = significand.multipliedFullWidth(by: UInt64(1) << UInt64(b))   // < 2^85
        let sign: Int64 = v < 0 ? -1 : 1
        acc[q] += sign * Int64(low & 0xFFFF_FFFF)
        acc[q + 1] += sign * Int64(low >> 32)
        if high != 0 { acc[q + 2] += sign * Int64(high) }
    }

    /// The sum held in `width` words, as a Double (NaN when any input was non-finite).
    @inline(__always)
    public static func value(_ acc: UnsafePointer<Int64>) -> Double {
        if acc[limbs] != 0 { return .nan }
        // Normalise carries so that digits 0..<limbs-1 lie in [0, 2^32), then combine from the top:
        // the result depends only on the integer held, never on how it was accumulated.
        var digits = [Int64](repeating: 0, count: limbs)
        var carry: Int64 = 0
        for i in 0..<limbs {
            let t = acc[i] &+ carry
            if i == limbs - 1 { digits[i] = t; break }
            digits[i] = t & 0xFFFF_FFFF
            carry = t >> 32   // arithmetic shift: floor division for negative values too
        }
        var v = 0.0
        for i in stride(from: limbs - 1, through: 0, by: -1) {
            v += Double(digits[i]) * Double(sign: .plus, exponent: 32 * i - fractionBits, significand: 1)
        }
        return v
    }

    /// Element-wise: `values.count` sums laid out as consecutive groups of `width` words.
    public static func values(_ acc: UnsafeBufferPointer<Int64>) -> [Double] {
        precondition(acc.count % width == 0)
        return (0..<(acc.count / width)).map { value(acc.baseAddress! + $0 * width) }
    }
}
