// Global gradient-norm clipping: applied after the gradients are summed over ranks, so every
// rank scales identically; with a sharded optimizer each rank scales its own share.
import NN
import TensorCore

/// Elements per tile of the squared norm. Each tile's squares are summed in Double in arena order
/// and the tiles' sums are added exactly (ExactSum), so the norm has the same bits whether one
/// rank sums every tile or each rank sums the tiles of its shard (shards hold whole tiles).
public let normTile = 256

/// The squared L2 norm of the gradients in `within` (whole tiles, or up to the arena's end), as
/// ExactSum words: words of several shards add (as Int64) to the words of their union.
public func squaredGradientNormWords(_ arena: Arena, within: Range<Int> = 0..<Int.max) -> [Int64] {
    let g = arena.summedGrads.baseAddress!
    var words = [Int64](repeating: 0, count: ExactSum.width)
    let r = within.clamped(to: 0..<arena.count)
    var lo = r.lowerBound
    while lo < r.upperBound {
        let hi = min((lo / normTile + 1) * normTile, r.upperBound)
        var sq = 0.0
        for i in lo..<hi { sq += Double(g[i]) * Double(g[i]) }
        words.withUnsafeMutableBufferPointer { ExactSum.add(sq, into: $0.baseAddress!) }
        lo = hi
    }
    return words
}

/// Clips the whole arena (one rank holds every gradient).
public func clipGradientNorm(_ arena: Arena, maxNorm: Float) {
    clipGradientNorm(arena, maxNorm: maxNorm, combine: { $0 })
}

/// Scales the gradients in `within` so that their global L2 norm is at most `maxNorm`.
/// `combine` sums the squared-norm words over the ranks that hold the other shards (the
/// identity when this rank holds every gradient).
public func clipGradientNorm(_ arena: Arena, maxNorm: Float, within: Range<Int> = 0..<Int.max,
                             combine: ([Int64]) throws -> [Int64]) rethrows {
    let words = try combine(squaredGradientNormWords(arena, within: within))
    let norm = Float(words.withUnsafeBufferPointer { ExactSum.value($0.baseAddress!) }.squareRoot())
    if norm > maxNorm {
        let s = maxNorm / (norm + 1e-6)
        let g = arena.summedGrads.baseAddress!
        for i in within.clamped(to: 0..<arena.count) { g[i] *= s }
    }
}
