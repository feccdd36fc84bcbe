import Foundation

// Counter-based randomness (Philox4x32-10, Salmon et al., SC'11).
//
// Every random number is a pure function of (seed, purpose, a, b, c): no generator state is
// carried from one sample to the next, so a sample's augmentation or dropout mask depends on
// its global index and never on which rank happens to process it.

public enum RandomPurpose: UInt32, Sendable {
    case shuffle = 1, initialization = 2, dropout = 3, flip = 4, crop = 5, validation = 6,
         translate = 7, erasing = 8, noise = 9, resizedCrop = 10, test = 99
}

public struct Philox: Sendable {
    public let seed: UInt64
    public init(seed: UInt64) { self.seed = seed }

    @inline(__always)
    static func mulhilo(_ a: UInt32, _ b: UInt32) -> (hi: UInt32, lo: UInt32) {
        let p = UInt64(a) &* UInt64(b)
        return (UInt32(truncatingIfNeeded: p >> 32), UInt32(truncatingIfNeeded: p))
    }

    /// Four 32-bit random words for counter (c0, c1, c2, c3).
    @inline(__always)
    public func block(_ c0: UInt32, _ c1: UInt32, _ c2: UInt32, _ c3: UInt32) -> (UInt32, UInt32, UInt32, UInt32) {
        var x0 = c0, x1 = c1, x2 = c2, x3 = c3
        var k0 = UInt32(truncatingIfNeeded: seed), k1 = UInt32(truncatingIfNeeded: seed >> 32)
        for _ in 0..<10 {
            let (hi0, lo0) = Philox.mulhilo(0xD251_1F53, x0)
            let (hi1, lo1) = Philox.mulhilo(0xCD9E_8D57, x2)
            let n0 = hi1 ^ x1 ^ k0
            let n2 = hi0 ^ x3 ^ k1
            x0 = n0; x1 = lo1; x2 = n2; x3 = lo0
            k0 = k0 &+ 0x9E37_79B9
            k1 = k1 &+ 0xBB67_AE85
        }
        return (x0, x1, x2, x3)
    }

    /// A stream of random numbers for one (purpose, a, b) triple, indexed by element.
    public func stream(_ purpose: RandomPurpose, _ a: Int, _ b: Int) -> PhiloxStream {
        PhiloxStream(philox: self, purpose: purpose.rawValue, a: UInt32(truncatingIfNeeded: a), b: UInt32(truncatingIfNeeded: b))
    }
}

/// Random words for element indices 0, 1, 2, ... of one (purpose, a, b) key; four words per block.
public struct PhiloxStream: Sendable {
    let philox: Philox
    let purpose: UInt32, a: UInt32, b: UInt32

    @inline(__always)
    public func word(_ index: Int) -> UInt32 {
        let (w0, w1, w2, w3) = philox.block(purpose, a, b, UInt32(truncatingIfNeeded: index >> 2))
        switch index & 3 {
        case 0: return w0
        case 1: return w1
        case 2: return w2
        default: return w3
        }
    }

    /// Uniform in [0, 1) with 24 bits of resolution.
    @inline(__always)
    public func uniform(_ index: Int) -> Float { Float(word(index) >> 8) * (1.0 / 16_777_216.0) }

    /// Uniform integer in 0..<bound (bound < 2^32), by 64-bit multiply-shift (bias < 2^-32·bound).
    @inline(__always)
    public func below(_ bound: Int, _ index: Int) -> Int {
        let w = UInt64(word(index))
        return Int((w &* UInt64(bound)) >> 32)
    }

    /// Fills `out` with uniform floats in [0, 1): element i gets the word for index `first + i`.
    public func fillUniform(_ out: UnsafeMutablePointer<Float>, count: Int, first: Int = 0) {
        var i = 0
        while i < count {
            let idx = first + i
            let (w0, w1, w2, w3) = philox.block(purpose, a, b, UInt32(truncatingIfNeeded: idx >> 2))
            var lane = idx & 3
            while lane < 4 && i < count {
                let w = lane == 0 ? w0 : lane == 1 ? w1 : lane == 2 ? w2 : w3
                out[i] = Float(w >> 8) * (1.0 / 16_777_216.0)
                lane += 1; i += 1
            }
        }
    }

    /// Standard normal deviates (Box–Muller on pairs of uniforms).
    public func normal(_ index: Int) -> Float {
        var u1 = Double(word(2 * index) >> 8) * (1.0 / 16_777_216.0)
        let u2 = Double(word(2 * index + 1) >> 8) * (1.0 / 16_777_216.0)
        if u1 < 1e-12 { u1 = 1e-12 }
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

