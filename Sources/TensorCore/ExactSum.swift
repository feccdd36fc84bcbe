// Order-independent sums: the arithmetic behind exact mode's world-size invariance.
//
// Float addition is not associative, so a sum over samples depends on how the samples were
// split among ranks and on the order MPI combines them. Integer addition is associative: a value
// rounded once to a fixed-point integer can be added in any order, on any number of ranks, by
// any all-reduce algorithm, and give the same bits. Two encodings are used:
//
// * `ExactSum` (small vectors: batch-norm statistics, loss and metric sums) needs no agreed
//   scale. A Double is rounded to a multiple of 2^-64 and stored as `limbs` 32-bit digits (each
//   carrying the value's sign) held in Int64 words (digit i weighs 2^(32i-64)), plus one word counting non-finite inputs.
//   Digit-wise sums of up to 2^31 values cannot overflow. Range |v| < 2^94; the rounding error
//   is at most 2^-65 per value added, so a sum of n values is within n·2^-65 of the exact sum of
//   the Doubles given (then rounded once more when read back as a Double).
// * `FixedPoint` (the gradient arena, large) uses one Int64 per value and a per-tensor scale
//   2^s that all ranks agree on from the all-reduced maximum |value| (see `scaleExponent`).

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
    @inline(__always)
    public static func add(_ v: Double, into acc: UnsafeMutablePointer<Int64>) {
        guard v.isFinite, abs(v) < limit else { acc[limbs] += 1; return }
        // r = |v|·2^64 rounded to an integer: exact scaling by a power of two, then one rounding
        // (half to even, which is symmetric, so −v adds exactly the negated digits of v).
        var r = (abs(v) * 0x1p64).rounded(.toNearestOrEven)
        let sign: Int64 = v < 0 ? -1 : 1
        // Peel digits from the top: d = ⌊r / 2^32i⌋; since 0 ≤ r − d·2^32i < 2^32i keeps a subset
        // of r's bits, the subtraction is exact.
        var i = limbs - 1
        while i > 0 {
            let unit = Double(sign: .plus, exponent: 32 * i, significand: 1)
            let d = (r / unit).rounded(.down)
            if d != 0 {
                acc[i] += sign * Int64(d)
                r -= d * unit
            }
            i -= 1
        }
        acc[0] += sign * Int64(r)
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

public enum FixedPoint {
    /// Headroom so that `terms` values, each below 2^62/2^⌈log2 terms⌉ in magnitude, add up
    /// without overflowing Int64.
    public static func headroomBits(terms: Int) -> Int {
        var bits = 0
        while (1 << bits) < max(terms, 1) { bits += 1 }
        return bits
    }

    /// The scale exponent s for a tensor whose largest |value| over every rank and chunk is
    /// `maximum`, when `terms` values are added per element: values are stored as
    /// round(v·2^s), with |v·2^s| ≤ 2^(62 − headroom). Every rank computes the same s from the
    /// same all-reduced maximum. A zero tensor gets s = 0 (all its values round to 0).
    public static func scaleExponent(maximum: Float, terms: Int) -> Int {
        guard maximum > 0, maximum.isFinite else { return 0 }
        // maximum < 2^(e+1) where e is its binary exponent.
        let e = Int(maximum.exponent) + 1
        return 62 - headroomBits(terms: terms) - e
    }

    /// acc[i] += round(x[i]·2^s), for n values.
    @inline(__always)
    public static func accumulate(_ x: UnsafePointer<Float>, _ n: Int, exponent s: Int, into acc: UnsafeMutablePointer<Int64>) {
        let scale = Double(sign: .plus, exponent: s, significand: 1)
        for i in 0..<n {
            acc[i] &+= Int64((Double(x[i]) * scale).rounded(.toNearestOrEven))
        }
    }

    /// y[i] = Float(acc[i]·2^-s), for n values.
    @inline(__always)
    public static func decode(_ acc: UnsafePointer<Int64>, _ n: Int, exponent s: Int, into y: UnsafeMutablePointer<Float>) {
        let scale = Double(sign: .plus, exponent: -s, significand: 1)
        for i in 0..<n { y[i] = Float(Double(acc[i]) * scale) }
    }
}
