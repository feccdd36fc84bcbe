// Building a model from a list of layer specifications, inferring every shape from the input.
import Collectives

public enum BatchNormMode: String, CaseIterable, Sendable {
    /// Statistics over the global batch (all ranks).
    case sync
    /// Statistics over each rank's own part of the batch.
    case local
}

public enum LayerSpec: Equatable, Sendable {
    /// `inputs`, when given, is the input size the user expects; a mismatch is an error.
    case dense(inputs: Int? = nil, out: Int, bias: Bool, initializer: Initializer?)
    /// `inputs`, when given, is the number of input channels the user expects.
    case conv(inputs: Int? = nil, out: Int, kernel: Int, stride: Int, padding: Int, bias: Bool, initializer: Initializer?)
    case maxPool(size: Int, stride: Int?)
    case avgPool(size: Int, stride: Int?)
    case globalAvgPool
    case flatten
    case batchNorm(momentum: Float, epsilon: Float)
    /// Group norm; `groups: nil` means one group per channel (instance norm).
    case groupNorm(groups: Int?, epsilon: Float, kind: String)
    case relu
    case leakyReLU(slope: Float)
    case prelu(perChannel: Bool)
    case sigmoid
    case tanh
    case elu(alpha: Float)
    case gelu
    case silu
    case softplus
    case dropout(probability: Float)

    /// The layer kind as written in configs.
    public var kind: String {
        switch self {
        case .dense: return "dense"
        case .conv: return "conv"
        case .maxPool: return "maxpool"
        case .avgPool: return "avgpool"
        case .globalAvgPool: return "global_avgpool"
        case .flatten: return "flatten"
        case .batchNorm: return "batchnorm"
        case let .groupNorm(_, _, kind): return kind
        case .relu: return "relu"
        case .leakyReLU: return "leaky_relu"
        case .prelu: return "prelu"
        case .sigmoid: return "sigmoid"
        case .tanh: return "tanh"
        case .elu: return "elu"
        case .gelu: return "gelu"
        case .silu: return "silu"
        case .softplus: return "softplus"
        case .dropout: return "dropout"
        }
    }
}

public struct ModelBuilder {
    public var batchNormMode: BatchNormMode
    public var communicator: Communicator

    public init(batchNormMode: BatchNormMode = .sync, communicator: Communicator) {
        self.batchNormMode = batchNormMode
        self.communicator = communicator
    }

    /// Builds layers named `<kind><k>` (conv1, batchnorm1, dense2, ...). The default initialiser
    /// of a dense or conv layer is He normal when a ReLU-family activation follows it (or nothing
    /// does; ELU, GELU, SiLU and Softplus count as that family) and Xavier normal before
    /// sigmoid or tanh.
    public func build(_ specs: [LayerSpec], inputShape: [Int], spareGradientFloats: Int = 0) throws -> Model {
        var layers: [Layer] = []
        var shape = inputShape
        var counters: [String: Int] = [:]
        for (index, spec) in specs.enumerated() {
            counters[spec.kind, default: 0] += 1
            let name = "\(spec.kind)\(counters[spec.kind]!)"
            let defaultInit = Self.defaultInitializer(after: specs[(index + 1)...])
            let layer: Layer
            switch spec {
            case let .dense(inputs, out, bias, initializer):
                if let inputs, shape != [inputs] {
                    throw ShapeError("\(name): dense expects input [\(inputs)] but the layer before it gives \(shape)" + (shape.count > 1 ? " (add a flatten layer?)" : ""))
                }
                layer = try Dense(name: name, inputShape: shape, outFeatures: out, bias: bias,
                                  initializer: initializer ?? defaultInit)
            case let .conv(inputs, out, kernel, stride, padding, bias, initializer):
                if let inputs, shape.first != inputs || shape.count != 3 {
                    throw ShapeError("\(name): conv expects \(inputs) input channels but the layer before it gives \(shape)")
                }
                layer = try Conv2D(name: name, inputShape: shape, outChannels: out, kernel: kernel, stride: stride,
                                   padding: padding, bias: bias, initializer: initializer ?? defaultInit)
            case let .maxPool(size, stride):
                layer = try MaxPool2D(name: name, inputShape: shape, size: size, stride: stride)
            case let .avgPool(size, stride):
                layer = try AvgPool2D(name: name, inputShape: shape, size: size, stride: stride)
            case .globalAvgPool:
                layer = try GlobalAvgPool(name: name, inputShape: shape)
            case .flatten:
                layer = Flatten(name: name, inputShape: shape)
            case let .batchNorm(momentum, epsilon):
                switch batchNormMode {
                case .sync:
                    layer = try SyncBatchNorm(name: name, inputShape: shape, momentum: momentum, epsilon: epsilon,
                                              communicator: communicator)
                case .local:
                    layer = try BatchNorm(name: name, inputShape: shape, momentum: momentum, epsilon: epsilon)
                }
            case let .groupNorm(groups, epsilon, _):
                layer = try GroupNorm(name: name, inputShape: shape, groups: groups ?? shape[0], epsilon: epsilon)
            case .relu: layer = ReLU(name: name, inputShape: shape)
            case let .leakyReLU(slope): layer = LeakyReLU(name: name, inputShape: shape, slope: slope)
            case let .prelu(perChannel): layer = PReLU(name: name, inputShape: shape, perChannel: perChannel)
            case .sigmoid: layer = Sigmoid(name: name, inputShape: shape)
            case .tanh: layer = Tanh(name: name, inputShape: shape)
            case let .elu(alpha): layer = ELU(name: name, inputShape: shape, alpha: alpha)
            case .gelu: layer = GELU(name: name, inputShape: shape)
            case .silu: layer = SiLU(name: name, inputShape: shape)
            case .softplus: layer = Softplus(name: name, inputShape: shape)
            case let .dropout(p): layer = try Dropout(name: name, inputShape: shape, probability: p, layerIndex: index)
            }
            layers.append(layer)
            shape = layer.outputShape
        }
        return Model(layers: layers, inputShape: inputShape, spareGradientFloats: spareGradientFloats)
    }

    static func defaultInitializer(after rest: ArraySlice<LayerSpec>) -> Initializer {
        for spec in rest {
            switch spec {
            case .relu, .leakyReLU, .prelu, .elu, .gelu, .silu, .softplus: return .heNormal
            case .sigmoid, .tanh: return .xavierNormal
            case .dense, .conv: return .heNormal
            default: continue
            }
        }
        return .heNormal
    }
}
