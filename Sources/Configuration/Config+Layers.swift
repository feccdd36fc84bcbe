// Reading the layer list of a config into LayerSpecs (residual blocks nest their own lists).
import Foundation
import NN

extension TrainingConfig {
    /// `classes` is data.classes, which `dense: {out: classes}` names.
    static func parseLayer(_ value: ConfigValue, path: String, file: String, classes: Int) throws -> LayerSpec {
        let whereText = "\(ConfigSection.location(file, value.line)): '\(path)'"
        let kind: String
        let argsValue: ConfigValue?
        switch value {
        case .scalar(let s, _): kind = s; argsValue = nil
        case .map(let pairs, _) where pairs.count == 1: kind = pairs[0].key; argsValue = pairs[0].value
        default: throw ConfigError("\(whereText): expected a layer such as '- conv: {out: 32, kernel: 3}' (one key per list item)")
        }
        let a = try ConfigSection(file: file, path: "\(path).\(kind)", value: argsValue)
        let spec: LayerSpec
        func initializer() throws -> Initializer? {
            guard try a.scalar("init") != nil else { return nil }
            return try a.choice("init", default: Initializer.heNormal, among: Initializer.random)
        }
        switch kind {
        case "dense", "linear":
            spec = .dense(inputs: try a.scalar("in") == nil ? nil : try a.int("in", default: 1, min: 1),
                          out: try a.scalar("out") == "classes" ? classes : try required(a, "out"),
                          bias: try a.bool("bias", default: true), initializer: try initializer())
        case "conv", "conv2d":
            spec = .conv(inputs: try a.scalar("in") == nil ? nil : try a.int("in", default: 1, min: 1),
                         out: try required(a, "out"), kernel: try required(a, "kernel"),
                         stride: try a.int("stride", default: 1, min: 1), padding: try a.int("padding", default: 0, min: 0),
                         bias: try a.bool("bias", default: true), initializer: try initializer(),
                         algorithm: try a.scalar("algorithm") == nil ? nil : try a.choice("algorithm", default: ConvAlgorithm.auto))
        case "maxpool":
            let size = try required(a, "size")
            spec = .maxPool(size: size, stride: try a.scalar("stride") == nil ? nil : try a.int("stride", default: size, min: 1))
        case "avgpool":
            let size = try required(a, "size")
            spec = .avgPool(size: size, stride: try a.scalar("stride") == nil ? nil : try a.int("stride", default: size, min: 1))
        case "global_avgpool": spec = .globalAvgPool
        case "flatten": spec = .flatten
        case "batchnorm":
            spec = .batchNorm(momentum: Float(try a.double("momentum", default: Double(LayerDefaults.batchNormMomentum), range: 0...1)),
                              epsilon: Float(try a.double("epsilon", default: Double(LayerDefaults.normEpsilon), range: 1e-12...1)))
        case "groupnorm":
            spec = .groupNorm(groups: try required(a, "groups"), epsilon: Float(try a.double("epsilon", default: Double(LayerDefaults.normEpsilon), range: 1e-12...1)), kind: "groupnorm")
        case "layernorm":
            spec = .groupNorm(groups: 1, epsilon: Float(try a.double("epsilon", default: Double(LayerDefaults.normEpsilon), range: 1e-12...1)), kind: "layernorm")
        case "instancenorm":
            spec = .groupNorm(groups: nil, epsilon: Float(try a.double("epsilon", default: Double(LayerDefaults.normEpsilon), range: 1e-12...1)), kind: "instancenorm")
        case "relu": spec = .relu
        case "leaky_relu": spec = .leakyReLU(slope: Float(try a.double("slope", default: Double(LayerDefaults.leakyReLUSlope), range: 0...1)))
        case "prelu": spec = .prelu(perChannel: try a.bool("per_channel", default: false))
        case "sigmoid": spec = .sigmoid
        case "tanh": spec = .tanh
        case "elu": spec = .elu(alpha: Float(try a.double("alpha", default: Double(LayerDefaults.eluAlpha), range: 0...100)))
        case "gelu": spec = .gelu
        case "silu", "swish": spec = .silu
        case "softplus": spec = .softplus
        case "residual":
            guard let items = try a.list("layers"), !items.isEmpty else {
                throw ConfigError("\(whereText): a residual block needs 'layers', a non-empty list of layers")
            }
            let inner = try items.enumerated().map { try parseLayer($0.element, path: "\(path).residual.layers[\($0.offset)]", file: file, classes: classes) }
            spec = .residual(layers: inner, projection: try a.choice("projection", default: ResidualProjection.auto))
        case "dropout": spec = .dropout(probability: Float(try a.double("p", default: Double(LayerDefaults.dropoutProbability), range: 0...0.999)))
        default:
            throw ConfigError("\(whereText): unknown layer '\(kind)' (known: dense, conv, maxpool, avgpool, global_avgpool, flatten, batchnorm, groupnorm, layernorm, instancenorm, relu, leaky_relu, prelu, elu, gelu, silu, softplus, sigmoid, tanh, dropout, residual)")
        }
        try a.finish()
        return spec
    }

    static func required(_ s: ConfigSection, _ key: String) throws -> Int {
        guard try s.scalar(key) != nil else { throw s.fail(key, nil, "an integer (required)") }
        return try s.int(key, default: 0, min: 1)
    }
}
