// Parameters and buffers: named views into one flat arena.
//
// A model's trainable parameters live in one contiguous Float buffer and their gradients in a
// second buffer with the same layout, so that one all-reduce moves every gradient and the
// optimizer is a flat loop. Buffers (batch-norm running statistics) live in an arena of their
// own, without gradients. Names are dotted (`conv1.weight`, `bn1.running_mean`) and double as
// checkpoint keys.
import TensorCore

/// How a parameter's initial values are drawn. He (Kaiming) and Xavier (Glorot) follow
/// He et al. 2015 and Glorot & Bengio 2010.
public enum Initializer: String, CaseIterable, Sendable {
    case heNormal = "he_normal", heUniform = "he_uniform"
    case xavierNormal = "xavier_normal", xavierUniform = "xavier_uniform"
    /// U(±1/√fan_in): PyTorch's default for nn.Linear and nn.Conv2d weights (kaiming_uniform with
    /// a = √5): variance 1/(3·fan_in), a sixth of He's. Useful to reproduce a PyTorch recipe.
    case torchDefault = "torch_default"
    /// LeCun et al. 1998 ("Efficient BackProp"): variance 1/fan_in, the start SELU-style and
    /// tanh networks are analysed with.
    case lecunNormal = "lecun_normal", lecunUniform = "lecun_uniform"
    case zeros, ones
    case quarter  // PReLU's conventional starting slope, 0.25

    /// The initialisers a dense or conv weight may be given. A zero or constant start leaves every
    /// unit of a layer computing the same thing, so configs cannot ask for one.
    public static let random: [Initializer] = [.heNormal, .heUniform, .xavierNormal, .xavierUniform, .lecunNormal, .lecunUniform, .torchDefault]
}

public final class Parameter {
    public let name: String
    public let shape: [Int]
    public let count: Int
    public let initializer: Initializer
    public let fanIn: Int, fanOut: Int
    /// Whether weight decay applies (the optimizer may choose to exempt norms and biases).
    public let isWeight: Bool
    public internal(set) var offset = 0
    public internal(set) var value: UnsafeMutablePointer<Float>! = nil
    public internal(set) var grad: UnsafeMutablePointer<Float>! = nil
    /// Where chunk `j`'s share of the gradient goes: `grad` itself when the arena sums all chunks
    /// in place (stride 0), or a separate slot per chunk in exact mode (see Arena.useChunkSlots).
    var slotBase: UnsafeMutablePointer<Float>! = nil
    var slotStride = 0
    /// Where this parameter sits within a chunk slot (Arena.useChunkSlots).
    public internal(set) var slotOffset = 0
    /// Set by a layer whose backward sums its own chunks in the tree (Dense's weight, through
    /// CKernels' lockstep_tree_dense_wgrad) instead of writing chunk slots.
    public var sumsOwnChunks = false
    /// Exact mode, for a parameter that sums its own chunks: where this micro-batch's block sums
    /// go. Nil on the float path (the layer then adds into `gradient(slot:)` as every other
    /// layer does).
    public var hot: ChunkBlocks?

    public init(name: String, shape: [Int], initializer: Initializer, fanIn: Int = 1, fanOut: Int = 1, isWeight: Bool = false) {
        self.name = name
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.initializer = initializer
        self.fanIn = fanIn
        self.fanOut = fanOut
        self.isWeight = isWeight
    }

    public var values: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: value, count: count) }
    public var grads: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: grad, count: count) }

    /// The gradient that a layer's backward adds chunk `slot`'s contribution into.
    @inline(__always)
    public func gradient(slot: Int) -> UnsafeMutablePointer<Float> { slotBase + slot * slotStride }
}

/// Exact mode's target for a layer that sums its chunks itself: for each block b, the local
/// chunks [first[b], first[b] + count[b]) of the micro-batch, added in the chunk tree (TensorCore's
/// ChunkTree) and written to `bases[b] + parameter.offset` (each base a vector laid out like the
/// arena). The gradient reducer owns the blocks and sets them before each micro-batch.
public final class ChunkBlocks {
    public var first: [Int32] = []
    public var count: [Int32] = []
    public var bases: [UnsafeMutablePointer<Float>?] = []
    public init() {}
}

/// One flat buffer (and optionally a gradient buffer of the same layout) holding many parameters.
public final class Arena {
    public let entries: [Parameter]
    public let count: Int
    public let values: UnsafeMutableBufferPointer<Float>
    public let grads: UnsafeMutableBufferPointer<Float>?

    /// Floats after the gradients (`gradsWithSpare`) and after the values (`valuesWithSpare`)
    /// that travel with them: what the owner puts there is its own business (the trainer's fast
    /// path sends its stop flag in one).
    public let spareCount: Int

    public init(_ entries: [Parameter], withGradients: Bool, spareGradientFloats: Int = 0) {
        spareCount = spareGradientFloats
        self.entries = entries
        var offset = 0
        for p in entries {
            p.offset = offset
            offset += p.count
        }
        count = offset
        values = .allocate(capacity: max(count + spareGradientFloats, 1))
        values.initialize(repeating: 0)
        if withGradients {
            let g = UnsafeMutableBufferPointer<Float>.allocate(capacity: count + spareGradientFloats)
            g.initialize(repeating: 0)
            grads = g
        } else {
            grads = nil
        }
        for p in entries {
            p.value = values.baseAddress! + p.offset
            p.grad = grads.map { $0.baseAddress! + p.offset }
            p.slotBase = p.grad
        }
    }

    deinit {
        values.deallocate()
        grads?.deallocate()
        slots?.deallocate()
    }

    /// Per-chunk gradient slots (exact mode): `slotCount` buffers of `slotFloats` floats, slot j
    /// at j·slotFloats, holding the parameters that do not sum their own chunks (at their
    /// `slotOffset`). Nil when chunks add into `grads` directly.
    public private(set) var slots: UnsafeMutableBufferPointer<Float>?
    public private(set) var slotCount = 0
    /// Floats per slot: the parameters that do not sum their own chunks.
    public private(set) var slotFloats = 0

    /// Gives every chunk of the next backward passes its own gradient slot (at least `n` slots),
    /// so that chunk sums can be added in the chunk tree rather than in the order they arrive.
    /// Parameters that sum their own chunks get none (they write their blocks themselves; a
    /// layer that did not would add into the gradient).
    public func useChunkSlots(_ n: Int) {
        precondition(grads != nil, "an arena without gradients has no slots")
        var floats = 0
        for p in entries where !p.sumsOwnChunks {
            p.slotOffset = floats
            floats += p.count
        }
        if n > slotCount || floats != slotFloats {
            slots?.deallocate()
            let s = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(n * floats, 1))
            s.initialize(repeating: 0)
            slots = s
            slotCount = n
            slotFloats = floats
        }
        for p in entries {
            if p.sumsOwnChunks {
                p.slotBase = p.grad
                p.slotStride = 0
            } else {
                p.slotBase = slots!.baseAddress! + p.slotOffset
                p.slotStride = floats
            }
        }
    }

    /// Slot j as one buffer of `slotFloats` floats.
    public func slot(_ j: Int) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: slots![(j * slotFloats)..<((j + 1) * slotFloats)])
    }

    /// Zeroes the first `n` slots.
    public func zeroSlots(_ n: Int) {
        guard let slots, n > 0 else { return }
        UnsafeMutableBufferPointer(rebasing: slots[0..<(min(n, slotCount) * slotFloats)]).update(repeating: 0)
    }

    /// The arena as one buffer of exactly `count` floats.
    public var flatValues: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(rebasing: values[0..<count]) }
    public var flatGrads: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(rebasing: grads![0..<count]) }
    /// The values plus the spare floats after them.
    public var valuesWithSpare: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(rebasing: values[0..<(count + spareCount)]) }
    /// The gradients plus the spare floats after them.
    public var gradsWithSpare: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(rebasing: grads![0..<(count + spareCount)]) }

    public func zeroGrads() { grads?.update(repeating: 0) }

    /// Where the step's summed gradient is (arena layout), for the update and clipping: the
    /// gradients themselves, unless the reducer left the sum elsewhere (exact mode's one-host
    /// reduction sums into memory the ranks share, and each reads it there; nil then means here).
    public var summedGradientBase: UnsafeMutablePointer<Float>?
    /// The step's summed gradient, `count` floats.
    public var summedGrads: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: summedGradientBase ?? grads!.baseAddress!, count: count)
    }

    /// Draws every entry's initial values from counter-based randomness keyed by (seed, entry index).
    public func initialize(seed: UInt64) {
        let rng = Philox(seed: seed)
        for (index, p) in entries.enumerated() {
            let stream = rng.stream(.initialization, index, 0)
            let v = p.value!
            switch p.initializer {
            case .zeros: v.update(repeating: 0, count: p.count)
            case .ones: v.update(repeating: 1, count: p.count)
            case .quarter: v.update(repeating: 0.25, count: p.count)
            case .heNormal:
                let std = (2.0 / Float(p.fanIn)).squareRoot()
                for i in 0..<p.count { v[i] = std * stream.normal(i) }
            case .heUniform:
                let bound = (6.0 / Float(p.fanIn)).squareRoot()
                for i in 0..<p.count { v[i] = (2 * stream.uniform(i) - 1) * bound }
            case .xavierNormal:
                let std = (2.0 / Float(p.fanIn + p.fanOut)).squareRoot()
                for i in 0..<p.count { v[i] = std * stream.normal(i) }
            case .xavierUniform:
                let bound = (6.0 / Float(p.fanIn + p.fanOut)).squareRoot()
                for i in 0..<p.count { v[i] = (2 * stream.uniform(i) - 1) * bound }
            case .lecunNormal:
                let std = (1.0 / Float(p.fanIn)).squareRoot()
                for i in 0..<p.count { v[i] = std * stream.normal(i) }
            case .lecunUniform:
                let bound = (3.0 / Float(p.fanIn)).squareRoot()
                for i in 0..<p.count { v[i] = (2 * stream.uniform(i) - 1) * bound }
            case .torchDefault:
                let bound = 1 / Float(p.fanIn).squareRoot()
                for i in 0..<p.count { v[i] = (2 * stream.uniform(i) - 1) * bound }
            }
        }
    }

    /// A fingerprint of names and shapes (the layout, not the values).
    public var layoutDescription: String {
        entries.map { "\($0.name)\($0.shape)" }.joined(separator: ";")
    }
}
