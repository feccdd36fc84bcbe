// Optimizers: flat loops over the parameter arena.
import NN
import TensorCore

public protocol Optimizer: AnyObject {
    /// Applies one update with learning rate `rate` to the arena elements `within` (every
    /// element's update depends only on its own gradient and state, so a sharded step, where
    /// each rank updates its share, has the bits of the whole step).
    func step(rate: Float, within: Range<Int>)
    /// Named state tensors (momentum, Adam moments) over the arena elements `owned`, in the
    /// arena's layout: element i of the arena is element i − owned.lowerBound of each.
    var state: [(name: String, values: UnsafeMutableBufferPointer<Float>)] { get }
    /// The arena elements this optimizer keeps state for and may update: the whole arena, or a
    /// rank's block when the step is sharded (ZeRO-1), so each rank holds 1/p of the state.
    var owned: Range<Int> { get }
    /// Steps taken so far (Adam's bias correction depends on it).
    var stepCount: Int { get set }
    /// The parameters and gradients it updates.
    var arena: Arena { get }
}

/// Where one update also writes what it stores: a checkpoint's image, so that taking the
/// checkpoint after the step needs no second pass over the state. `values` takes the parameters
/// in the arena's layout and `state[k]` the k-th `state` tensor in its own; `written` turns true
/// once an update of the whole arena has filled them.
public final class UpdateMirror {
    public let values: UnsafeMutablePointer<Float>
    public let state: [UnsafeMutablePointer<Float>]
    public internal(set) var written = false
    public init(values: UnsafeMutablePointer<Float>, state: [UnsafeMutablePointer<Float>]) {
        self.values = values
        self.state = state
    }
}

/// An optimizer whose update can fill an UpdateMirror as it goes (all of them, with streaming stores).
public protocol MirroringOptimizer: Optimizer {
    /// Read by the next `step`: when it updates every element this optimizer owns (the whole
    /// arena: not a sharded step), it also fills the mirror and sets `written`. Cleared by it.
    var mirror: UpdateMirror? { get set }
}

extension MirroringOptimizer {
    /// The mirror this step fills, cleared for the next: only for a step over everything owned,
    /// when that is the whole arena (a sharded step leaves the image unwritten).
    func takeMirror(within: Range<Int>) -> UpdateMirror? {
        defer { mirror = nil }
        return mirror.flatMap { $0.state.count == state.count && owned == 0..<arena.count && within.clamped(to: owned) == owned ? $0 : nil }
    }

    /// Runs the element-wise `update` over `range`; with `out`, in blocks of 2,048 elements (8 KB
    /// of each array), each streamed to the image (parameters and every state tensor) while it is
    /// still in L1. The update is element-wise, so blocks change no bits.
    func mirrored(_ range: Range<Int>, into out: UpdateMirror?, _ update: (Range<Int>) -> Void) {
        guard let out else { return update(range) }
        let w = arena.values.baseAddress!, base = owned.lowerBound, sources = state.map { $0.values.baseAddress! }
        var lo = range.lowerBound
        while lo < range.upperBound {
            let hi = min(lo + 2048, range.upperBound)
            update(lo..<hi)
            Vector.streamCopy(out.values + lo, w + lo, hi - lo)
            for (k, src) in sources.enumerated() { Vector.streamCopy(out.state[k] + (lo - base), src + (lo - base), hi - lo) }
            lo = hi
        }
    }

    /// After a mirrored step: the streamed stores are visible before the image is handed on.
    func finishMirror(_ out: UpdateMirror?) {
        guard let out else { return }
        Vector.streamFence()
        out.written = true
    }
}

extension Optimizer {
    /// Updates the whole arena.
    public func step(rate: Float) { step(rate: rate, within: 0..<Int.max) }

    /// One update of the elements `within`, after clipping the global gradient norm to
    /// `clipNorm` when set (Clipping.swift). `combine` sums the norm's exact words over the ranks
    /// that hold the other shards (the identity when this rank holds every gradient).
    public func update(rate: Float, within: Range<Int> = 0..<Int.max, clipNorm: Float?,
                       combine: ([Int64]) throws -> [Int64] = { $0 }) rethrows {
        if let clipNorm { try clipGradientNorm(arena, maxNorm: clipNorm, within: within, combine: combine) }
        step(rate: rate, within: within)
    }
}

/// The range an optimizer owns: `owned`, or the whole arena.
func ownedRange(_ owned: Range<Int>?, _ arena: Arena) -> Range<Int> {
    let r = owned ?? 0..<arena.count
    precondition(r.lowerBound >= 0 && r.upperBound <= arena.count, "an optimizer's range must lie within the arena")
    return r
}

/// `ranges` cut to `within`, dropping the empty ones.
func clamped(_ ranges: [(range: Range<Int>, decay: Float)], to within: Range<Int>) -> [(range: Range<Int>, decay: Float)] {
    ranges.compactMap { r in
        let c = r.range.clamped(to: within)
        return c.isEmpty ? nil : (c, r.decay)
    }
}

func allocateState(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
    let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
    b.initialize(repeating: 0)
    return UnsafeMutableBufferPointer(rebasing: b[0..<count])
}

/// The arena's element ranges, each with the weight decay that applies to it: all entries, or
/// only weights of dense and conv layers (not biases, norms or PReLU slopes).
func decayRanges(_ arena: Arena, weightDecay: Float, weightsOnly: Bool) -> [(range: Range<Int>, decay: Float)] {
    arena.entries.map { p in
        (p.offset..<(p.offset + p.count), (!weightsOnly || p.isWeight) ? weightDecay : 0)
    }
}

/// SGD with optional momentum, Nesterov momentum and L2 weight decay (PyTorch's formulation:
/// g ← g + λw; v ← μv + g; w ← w − η·(Nesterov ? g + μv : v)).
public final class SGD: MirroringOptimizer {
    public let arena: Arena
    public var mirror: UpdateMirror?
    public let momentum: Float, weightDecay: Float, nesterov: Bool
    let velocity: UnsafeMutableBufferPointer<Float>
    let ranges: [(range: Range<Int>, decay: Float)]
    public let owned: Range<Int>
    public var stepCount = 0

    public init(arena: Arena, momentum: Float = 0, weightDecay: Float = 0, nesterov: Bool = false,
                decayWeightsOnly: Bool = false, owned: Range<Int>? = nil) {
        self.arena = arena
        self.owned = ownedRange(owned, arena)
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        velocity = allocateState(self.owned.count)
        ranges = decayRanges(arena, weightDecay: weightDecay, weightsOnly: decayWeightsOnly)
    }

    deinit { velocity.baseAddress.map { UnsafeMutableBufferPointer(start: $0, count: max(velocity.count, 1)).deallocate() } }

    public var state: [(name: String, values: UnsafeMutableBufferPointer<Float>)] {
        momentum == 0 ? [] : [("momentum", velocity)]
    }

    public func step(rate: Float, within: Range<Int>) {
        let w = arena.values.baseAddress!, g = arena.summedGrads.baseAddress!, v = velocity.baseAddress!
        let mu = momentum, base = owned.lowerBound
        let out = takeMirror(within: within)
        for (range, lambda) in clamped(ranges, to: within.clamped(to: owned)) {
            mirrored(range, into: out) { r in
                if mu == 0 {
                    for i in r { w[i] -= rate * (g[i] + lambda * w[i]) }
                } else {
                    Vector.sgdMomentumStep(w: w + r.lowerBound, g: g + r.lowerBound, v: v + (r.lowerBound - base), n: r.count,
                                           rate: rate, momentum: mu, decay: lambda, nesterov: nesterov)
                }
            }
        }
        finishMirror(out)
        stepCount += 1
    }
}

/// Adam (Kingma & Ba 2015) with L2 weight decay folded into the gradient, or AdamW
/// (Loshchilov & Hutter 2019) with decoupled weight decay.
public final class Adam: MirroringOptimizer {
    public let arena: Arena
    public let beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float, decoupled: Bool
    let m: UnsafeMutableBufferPointer<Float>
    let v: UnsafeMutableBufferPointer<Float>
    let ranges: [(range: Range<Int>, decay: Float)]
    public let owned: Range<Int>
    public var stepCount = 0
    public var mirror: UpdateMirror?

    public init(arena: Arena, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8,
                weightDecay: Float = 0, decoupled: Bool = false, decayWeightsOnly: Bool = false, owned: Range<Int>? = nil) {
        self.arena = arena
        self.owned = ownedRange(owned, arena)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.decoupled = decoupled
        m = allocateState(self.owned.count)
        v = allocateState(self.owned.count)
        ranges = decayRanges(arena, weightDecay: weightDecay, weightsOnly: decayWeightsOnly)
    }

    deinit {
        for b in [m, v] { b.baseAddress.map { UnsafeMutableBufferPointer(start: $0, count: max(b.count, 1)).deallocate() } }
    }

    public var state: [(name: String, values: UnsafeMutableBufferPointer<Float>)] {
        [("adam_m", m), ("adam_v", v)]
    }

    public func step(rate: Float, within: Range<Int>) {
        stepCount += 1
        let t = Float(stepCount)
        let c1 = 1 - powf(beta1, t), c2 = 1 - powf(beta2, t)
        let w = arena.values.baseAddress!, g = arena.summedGrads.baseAddress!
        let mp = m.baseAddress!, vp = v.baseAddress!
        let b1 = beta1, b2 = beta2, eps = epsilon
        let stepSize = rate / c1
        let invC2 = 1 / c2, base = owned.lowerBound
        let out = takeMirror(within: within)
        for (range, lambda) in clamped(ranges, to: within.clamped(to: owned)) {
            // Decoupled (AdamW): shrink the weights directly; otherwise fold λw into the gradient.
            let l2: Float = decoupled ? 0 : lambda
            let shrink: Float = decoupled ? 1 - rate * lambda : 1
            mirrored(range, into: out) { r in
                let o = r.lowerBound
                Vector.adamStep(w: w + o, g: g + o, m: mp + (o - base), v: vp + (o - base), n: r.count, beta1: b1, beta2: b2,
                                epsilon: eps, l2: l2, shrink: shrink, stepSize: stepSize, invC2: invC2)
            }
        }
        finishMirror(out)
    }
}

import Foundation
