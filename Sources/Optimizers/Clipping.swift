// Global gradient-norm clipping: applied after the all-reduce, so every rank scales identically.
import NN

/// Scales gradients so that their global L2 norm is at most `maxNorm`. The norm is summed in
/// Double in arena order, so it has the same bits on every rank and in every run.
public func clipGradientNorm(_ arena: Arena, maxNorm: Float) {
    let g = arena.flatGrads
    var sq = 0.0
    for v in g { sq += Double(v) * Double(v) }
    let norm = Float(sq.squareRoot())
    if norm > maxNorm {
        let s = maxNorm / (norm + 1e-6)
        for i in 0..<g.count { g[i] *= s }
    }
}
