// Optimizer and schedule settings as a config states them, and building the optimizer and the
// learning-rate schedule from them: the one place that knows what each config key means.
// Every default is written here once; the config reader takes its defaults from these structs.
import NN

public struct OptimizerSettings: Sendable {
    public enum Kind: String, CaseIterable, Sendable { case sgd, adam, adamw, rmsprop, adagrad }
    public var kind = Kind.sgd
    public var learningRate = 0.01
    public var momentum = 0.0
    public var nesterov = false
    public var weightDecay = 0.0
    public var decayWeightsOnly = false
    public var beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8
    /// RMSProp's smoothing constant for the mean of squared gradients, and its centered variant.
    public var alpha = 0.99
    public var centered = false
    /// The linear scaling rule (Goyal et al. 2017): with `.linear` the rate used is
    /// lr × global batch / `referenceBatch`, so a recipe keeps its meaning when the global batch
    /// grows with the number of nodes (pair it with schedule.warmup_epochs).
    public enum Scaling: String, CaseIterable, Sendable { case none, linear }
    public var scaleLR = Scaling.none
    public var referenceBatch = 256

    /// The base learning rate for a global batch of `globalBatch`.
    public func baseRate(globalBatch: Int) -> Double {
        switch scaleLR {
        case .none: return learningRate
        case .linear: return learningRate * Double(globalBatch) / Double(referenceBatch)
        }
    }

    /// Global gradient-norm clipping (after the all-reduce), or nil.
    public var clipNorm: Double? = nil

    /// ZeRO stage 1: on several ranks, gradients are reduce-scattered, each rank updates its
    /// share of the parameters (with its share of the optimizer state) and the parameters are
    /// all-gathered. Same bits as the unsharded step in exact mode. `auto` shards when the ranks
    /// run on more than one host: measured (bench/shard) 2-5% faster between 2 emulated hosts
    /// at 10 Gbit/s, and no faster over shared memory, where an all-reduce is cheap.
    public enum Sharding: String, CaseIterable, Sendable { case auto, on = "true", off = "false" }
    public var shard = Sharding.auto

    public init() {}

    /// The optimizer these settings describe, over a model's parameter arena; with `owned`, it
    /// keeps state for (and updates) only those elements (a rank's block of a sharded step).
    public func make(arena: Arena, owned: Range<Int>? = nil) -> Optimizer {
        switch kind {
        case .sgd:
            return SGD(arena: arena, momentum: Float(momentum), weightDecay: Float(weightDecay),
                       nesterov: nesterov, decayWeightsOnly: decayWeightsOnly, owned: owned)
        case .rmsprop:
            return RMSProp(arena: arena, alpha: Float(alpha), epsilon: Float(epsilon), momentum: Float(momentum),
                           centered: centered, weightDecay: Float(weightDecay), decayWeightsOnly: decayWeightsOnly, owned: owned)
        case .adagrad:
            return AdaGrad(arena: arena, epsilon: Float(epsilon), weightDecay: Float(weightDecay), decayWeightsOnly: decayWeightsOnly, owned: owned)
        case .adam, .adamw:
            return Adam(arena: arena, beta1: Float(beta1), beta2: Float(beta2), epsilon: Float(epsilon),
                        weightDecay: Float(weightDecay), decoupled: kind == .adamw, decayWeightsOnly: decayWeightsOnly, owned: owned)
        }
    }
}

public struct ScheduleSettings: Sendable {
    public var kind = LearningRateSchedule.Kind.constant
    public var warmupEpochs = 0.0
    public var stepEpochs = 30.0
    public var gamma = 0.1
    public var minRate = 0.0

    public init() {}

    /// The schedule over `totalSteps` optimizer steps of `stepsPerEpoch` each, from `baseRate`.
    public func make(baseRate: Double, stepsPerEpoch: Int, totalSteps: Int) -> LearningRateSchedule {
        LearningRateSchedule(kind: kind, baseRate: baseRate, totalSteps: totalSteps,
                             warmupSteps: Int((warmupEpochs * Double(stepsPerEpoch)).rounded()),
                             stepSize: Int((stepEpochs * Double(stepsPerEpoch)).rounded()),
                             gamma: gamma, minRate: minRate)
    }
}
