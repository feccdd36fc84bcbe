// Adaptive per-element learning rates: AdaGrad and RMSProp, in PyTorch's formulations
// (torch.optim.Adagrad without lr decay; torch.optim.RMSprop with optional momentum and the
// centered variant), with L2 weight decay folded into the gradient.
import NN
import TensorCore

/// AdaGrad (Duchi et al. 2011): g ← g + λw; s ← s + g²; w ← w − η·g/(√s + ε).
public final class AdaGrad: MirroringOptimizer {
    public let arena: Arena
    public var mirror: UpdateMirror?
    public let epsilon: Float, weightDecay: Float
    let sum: UnsafeMutableBufferPointer<Float>
    let ranges: [(range: Range<Int>, decay: Float)]
    public let owned: Range<Int>
    public var stepCount = 0

    public init(arena: Arena, epsilon: Float = 1e-10, weightDecay: Float = 0, decayWeightsOnly: Bool = false, owned: Range<Int>? = nil) {
        self.arena = arena
        self.owned = ownedRange(owned, arena)
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        sum = allocateState(self.owned.count)
        ranges = decayRanges(arena, weightDecay: weightDecay, weightsOnly: decayWeightsOnly)
    }

    deinit { sum.baseAddress.map { UnsafeMutableBufferPointer(start: $0, count: max(sum.count, 1)).deallocate() } }

    public var state: [(name: String, values: UnsafeMutableBufferPointer<Float>)] { [("adagrad_sum", sum)] }

    public func step(rate: Float, within: Range<Int>) {
        let w = arena.values.baseAddress!, g = arena.summedGrads.baseAddress!
        let eps = epsilon, base = owned.lowerBound, s = sum.baseAddress!
        let out = takeMirror(within: within)
        for (range, lambda) in clamped(ranges, to: within.clamped(to: owned)) {
            mirrored(range, into: out) { r in
                for i in r {
                    let j = i - base   // the element's index in the state
                    let grad = g[i] + lambda * w[i]
                    s[j] += grad * grad
                    w[i] -= rate * grad / (s[j].squareRoot() + eps)
                }
            }
        }
        finishMirror(out)
        stepCount += 1
    }
}

/// RMSProp (Tieleman & Hinton 2012): g ← g + λw; v ← αv + (1−α)g²; centered: ḡ ← αḡ + (1−α)g,
/// v̂ = v − ḡ², else v̂ = v; with momentum μ: b ← μb + g/(√v̂ + ε), w ← w − ηb; without:
/// w ← w − η·g/(√v̂ + ε).
public final class RMSProp: MirroringOptimizer {
    public let arena: Arena
    public var mirror: UpdateMirror?
    public let alpha: Float, epsilon: Float, momentum: Float, centered: Bool, weightDecay: Float
    let square: UnsafeMutableBufferPointer<Float>
    let average: UnsafeMutableBufferPointer<Float>   // ḡ (centered only)
    let buffer: UnsafeMutableBufferPointer<Float>    // b (momentum only)
    let ranges: [(range: Range<Int>, decay: Float)]
    public let owned: Range<Int>
    public var stepCount = 0

    public init(arena: Arena, alpha: Float = 0.99, epsilon: Float = 1e-8, momentum: Float = 0, centered: Bool = false,
                weightDecay: Float = 0, decayWeightsOnly: Bool = false, owned: Range<Int>? = nil) {
        self.arena = arena
        self.owned = ownedRange(owned, arena)
        self.alpha = alpha
        self.epsilon = epsilon
        self.momentum = momentum
        self.centered = centered
        self.weightDecay = weightDecay
        square = allocateState(self.owned.count)
        average = allocateState(centered ? self.owned.count : 0)
        buffer = allocateState(momentum > 0 ? self.owned.count : 0)
        ranges = decayRanges(arena, weightDecay: weightDecay, weightsOnly: decayWeightsOnly)
    }

    deinit {
        for b in [square, average, buffer] { b.baseAddress.map { UnsafeMutableBufferPointer(start: $0, count: max(b.count, 1)).deallocate() } }
    }

    public var state: [(name: String, values: UnsafeMutableBufferPointer<Float>)] {
        [("rmsprop_square", square)] + (centered ? [("rmsprop_average", average)] : [])
            + (momentum > 0 ? [("rmsprop_momentum", buffer)] : [])
    }

    public func step(rate: Float, within: Range<Int>) {
        let w = arena.values.baseAddress!, g = arena.summedGrads.baseAddress!, v = square.baseAddress!
        let a = alpha, eps = epsilon, mu = momentum, base = owned.lowerBound
        let out = takeMirror(within: within)
        for (range, lambda) in clamped(ranges, to: within.clamped(to: owned)) {
            mirrored(range, into: out) { r in
                for i in r {
                    let j = i - base   // the element's index in the state
                    let grad = g[i] + lambda * w[i]
                    v[j] = a * v[j] + (1 - a) * grad * grad
                    var denominator = v[j]
                    if centered {
                        average[j] = a * average[j] + (1 - a) * grad
                        denominator -= average[j] * average[j]
                    }
                    let scaled = grad / (denominator.squareRoot() + eps)
                    if mu > 0 {
                        buffer[j] = mu * buffer[j] + scaled
                        w[i] -= rate * buffer[j]
                    } else {
                        w[i] -= rate * scaled
                    }
                }
            }
        }
        finishMirror(out)
        stepCount += 1
    }
}
