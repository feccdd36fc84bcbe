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
//   With C chunks (h = ⌈log2 C⌉) each chunk value is rounded to a multiple of 2^-s ≤ 2^(h-49)·max,
//   so each element of the sum is within C·2^(h-50)·max ≤ 2^(2h-50)·max of the exact sum of the
//   chunk values (2^-44 of the largest chunk value for 8 chunks), before the final rounding to
//   float.

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
    public static func add(_ v: Double, into acc: UnsafeMutablePointer<Int64>) {
        guard v.isFinite, abs(v) < limit else { acc[limbs] += 1; return }
        // r = |v|·2^64 rounded to an integer: exact scaling by a power of two, then one rounding
        // (half to even, which is symmetric, so −v adds exactly the negated digits of v).
        let r = (abs(v) * 0x1p64).rounded(.toNearestOrEven)
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

public enum FixedPoint {
    /// Bits a value may use after scaling: |v·2^s| ≤ 2^(budget − headroom), so that sums of up to
    /// 2^headroom terms stay below 2^budget < 2^51, where the round-by-adding trick below is exact.
    public static let budget = 50
    /// 1.5·2^52: adding it to |x| < 2^51 rounds x to the nearest integer (ties to even) in the
    /// low bits of the Double, which then differ from its own bits by exactly that integer.
    static let magic = 0x1.8p52

    /// Bits needed to count `terms` values: ⌈log2 terms⌉.
    public static func headroomBits(terms: Int) -> Int {
        var bits = 0
        while (1 << bits) < max(terms, 1) { bits += 1 }
        return bits
    }

    /// The scale exponent s for a tensor whose largest |value| over every rank and chunk is
    /// `maximum`, when `terms` values are added per element: values are stored as round(v·2^s)
    /// with |v·2^s| ≤ 2^(budget − headroom). Every rank derives the same s from the same
    /// all-reduced maximum. A zero tensor gets s = 0 (its values all round to 0).
    public static func scaleExponent(maximum: Float, terms: Int) -> Int {
        guard maximum > 0, maximum.isFinite else { return 0 }
        // maximum < 2^(e+1) where e is its binary exponent.
        let e = Int(maximum.exponent) + 1
        return budget - headroomBits(terms: terms) - e
    }

    /// acc[i] += round(x[i]·2^s), for n values (|x[i]·2^s| < 2^51).
    @inline(__always)
    public static func accumulate(_ x: UnsafePointer<Float>, _ n: Int, exponent s: Int, into acc: UnsafeMutablePointer<Int64>) {
        let scale = Double(sign: .plus, exponent: s, significand: 1)
        let mBits = Int64(bitPattern: magic.bitPattern)
        // Four lanes at a time, written with SIMD types (the loop vectoriser leaves the scalar
        // form alone); the tail uses the same operations one value at a time.
        let scale4 = SIMD4<Double>(repeating: scale), m4 = SIMD4<Double>(repeating: magic)
        let mBits4 = SIMD4<Int64>(repeating: mBits)
        var i = 0
        while i + 4 <= n {
            let d = SIMD4<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD4<Float>.self)) * scale4 + m4
            let a = UnsafeMutableRawPointer(acc + i)
            a.storeBytes(of: a.loadUnaligned(as: SIMD4<Int64>.self) &+ (unsafeBitCast(d, to: SIMD4<Int64>.self) &- mBits4),
                         as: SIMD4<Int64>.self)
            i += 4
        }
        while i < n {
            let rounded = Double(x[i]) * scale + magic
            acc[i] &+= Int64(bitPattern: rounded.bitPattern) &- mBits
            i += 1
        }
    }

    /// y[i] = Float(acc[i]·2^-s), for n values (|acc[i]| < 2^51).
    @inline(__always)
    public static func decode(_ acc: UnsafePointer<Int64>, _ n: Int, exponent s: Int, into y: UnsafeMutablePointer<Float>) {
        let scale = Double(sign: .plus, exponent: -s, significand: 1)
        let mBits = Int64(bitPattern: magic.bitPattern)
        let scale4 = SIMD4<Double>(repeating: scale), m4 = SIMD4<Double>(repeating: magic)
        let mBits4 = SIMD4<Int64>(repeating: mBits)
        var i = 0
        while i + 4 <= n {
            let bits = UnsafeRawPointer(acc + i).loadUnaligned(as: SIMD4<Int64>.self) &+ mBits4
            let exact = unsafeBitCast(bits, to: SIMD4<Double>.self) - m4
            UnsafeMutableRawPointer(y + i).storeBytes(of: SIMD4<Float>(exact * scale4), as: SIMD4<Float>.self)
            i += 4
        }
        while i < n {
            let exact = Double(bitPattern: UInt64(bitPattern: acc[i] &+ mBits)) - magic
            y[i] = Float(exact * scale)
            i += 1
        }
    }
}
