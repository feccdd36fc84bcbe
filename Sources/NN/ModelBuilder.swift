// Building a model from a list of layer specifications, inferring every shape from the input.
import Collectives

public enum BatchNormMode: String, CaseIterable, Sendable {
    /// Statistics over the global batch (all ranks).
    case sync
    /// Statistics over each rank's own part of the batch.
    case local
}

/// The default arguments of layers, written once: the layers' initialisers and the config reader
/// (Configuration's layer list) both take them from here.
public enum LayerDefaults {
    public static let batchNormMomentum: Float = 0.1
    public static let normEpsilon: Float = 1e-5
    public static let leakyReLUSlope: Float = 0.01
    public static let eluAlpha: Float = 1
    public static let dropoutProbability: Float = 0.5
}

public enum LayerSpec: Equatable, Sendable {
    /// `inputs`, when given, is the input size the user expects; a mismatch is an error.
    case dense(inputs: Int? = nil, out: Int, bias: Bool, initializer: Initializer?)
    /// `inputs`, when given, is the number of input channels the user expects.
    case conv(inputs: Int? = nil, out: Int, kernel: Int, stride: Int, padding: Int, bias: Bool, initializer: Initializer?,
              algorithm: ConvAlgorithm? = nil)
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
    /// A residual block: `layers` plus a shortcut (identity or projection).
    case residual(layers: [LayerSpec], projection: ResidualProjection)

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
        case .residual: return "residual"
        }
    }
}

public struct ModelBuilder {
    public var batchNormMode: BatchNormMode
    public var communicator: Communicator
    /// The algorithm of conv layers that name none (config `conv.algorithm`). Unlike a layer's
    /// own choice, a Winograd default falls back to im2col + GEMM where Winograd does not apply.
    public var convAlgorithm: ConvAlgorithm

    public init(batchNormMode: BatchNormMode = .sync, communicator: Communicator, convAlgorithm: ConvAlgorithm = .auto) {
        self.batchNormMode = batchNormMode
        self.communicator = communicator
        self.convAlgorithm = convAlgorithm
    }

    /// Builds layers named `<kind><k>` (conv1, batchnorm1, dense2, ...). The default initialiser
    /// of a dense or conv layer is He normal when a ReLU-family activation follows it (or nothing
    /// does; ELU, GELU, SiLU and Softplus count as that family) and Xavier normal before
    /// sigmoid or tanh.
    public func build(_ specs: [LayerSpec], inputShape: [Int], spareGradientFloats: Int = 0) throws -> Model {
        Model(layers: try layers(specs, inputShape: inputShape), inputShape: inputShape, spareGradientFloats: spareGradientFloats)
    }

    /// The layers alone, with every shape inferred and nothing allocated (parameters get their
    /// memory when a Model is made of them), so that a run's memory can be estimated first.
    public func layers(_ specs: [LayerSpec], inputShape: [Int]) throws -> [Layer] {
        var dropouts = 0
        return try buildLayers(specs, inputShape: inputShape, prefix: "", dropouts: &dropouts)
    }

    /// Layers named `<prefix><kind><k>`; `dropouts` numbers dropout layers across blocks, so each
    /// draws its own masks.
    func buildLayers(_ specs: [LayerSpec], inputShape: [Int], prefix: String, dropouts: inout Int) throws -> [Layer] {
        var layers: [Layer] = []
        var shape = inputShape
        var counters: [String: Int] = [:]
        for (index, spec) in specs.enumerated() {
            counters[spec.kind, default: 0] += 1
            let name = "\(prefix)\(spec.kind)\(counters[spec.kind]!)"
            let defaultInit = Self.defaultInitializer(after: specs[(index + 1)...])
            let layer: Layer
            switch spec {
            case let .dense(inputs, out, bias, initializer):
                if let inputs, shape != [inputs] {
                    throw ShapeError("\(name): dense expects input [\(inputs)] but the layer before it gives \(shape)" + (shape.count > 1 ? " (add a flatten layer?)" : ""))
                }
                layer = try Dense(name: name, inputShape: shape, outFeatures: out, bias: bias,
                                  initializer: initializer ?? defaultInit)
            case let .conv(inputs, out, kernel, stride, padding, bias, initializer, algorithm):
                if let inputs, shape.first != inputs || shape.count != 3 {
                    throw ShapeError("\(name): conv expects \(inputs) input channels but the layer before it gives \(shape)")
                }
                layer = try Conv2D(name: name, inputShape: shape, outChannels: out, kernel: kernel, stride: stride,
                                   padding: padding, bias: bias, initializer: initializer ?? defaultInit,
                                   algorithm: algorithm ?? convAlgorithm, strictAlgorithm: algorithm != nil)
            case let .maxPool(size, stride):
                layer = try MaxPool2D(name: name, inputShape: shape, size: size, stride: stride)
            case let .avgPool(size, stride):
                layer = try AvgPool2D(name: name, inputShape: shape, size: size, stride: stride)
            case .globalAvgPool:
                layer = try GlobalAvgPool(name: name, inputShape: shape)
            case .flatten:
                layer = Flatten(name: name, inputShape: shape)
            case let .batchNorm(momentum, epsilon):
                layer = try makeBatchNorm(name: name, shape: shape, momentum: momentum, epsilon: epsilon)
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
            case let .dropout(p):
                // A top-level dropout's masks are keyed by its position in the list; one inside a
                // block by 1000 + how many block dropouts came before it.
                layer = try Dropout(name: name, inputShape: shape, probability: p, layerIndex: prefix.isEmpty ? index : 1000 + dropouts)
                if !prefix.isEmpty { dropouts += 1 }
            case let .residual(innerSpecs, projection):
                let inner = try buildLayers(innerSpecs, inputShape: shape, prefix: name + ".", dropouts: &dropouts)
                let innerShape = inner.last!.outputShape
                var shortcut: [Layer] = []
                if projection == .always || (projection == .auto && innerShape != shape) {
                    // A 1×1 conv with stride s maps h to (h − 1)/s + 1 (7 → 4 with s = 2, as a 3×3
                    // conv with padding 1 and stride 2 does).
                    let stride = shape.count == 3 && innerShape.count == 3 ? max(1, (shape[1] + innerShape[1] - 1) / innerShape[1]) : 1
                    guard shape.count == 3, innerShape.count == 3,
                          (shape[1] - 1) / stride + 1 == innerShape[1], (shape[2] - 1) / stride + 1 == innerShape[2] else {
                        throw ShapeError("\(name): cannot project \(shape) to \(innerShape) with a strided 1×1 conv")
                    }
                    shortcut = [try Conv2D(name: name + ".shortcut.conv", inputShape: shape, outChannels: innerShape[0], kernel: 1,
                                           stride: stride, bias: false, initializer: .heNormal)]
                    shortcut.append(try makeBatchNorm(name: name + ".shortcut.batchnorm", shape: shortcut[0].outputShape))
                }
                layer = try Residual(name: name, inputShape: shape, inner: inner, shortcut: shortcut)
            }
            layers.append(layer)
            shape = layer.outputShape
        }
        return layers
    }

    func makeBatchNorm(name: String, shape: [Int], momentum: Float = LayerDefaults.batchNormMomentum, epsilon: Float = LayerDefaults.normEpsilon) throws -> Layer {
        switch batchNormMode {
        case .sync: return try SyncBatchNorm(name: name, inputShape: shape, momentum: momentum, epsilon: epsilon, communicator: communicator)
        case .local: return try BatchNorm(name: name, inputShape: shape, momentum: momentum, epsilon: epsilon)
        }
    }

    static func defaultInitializer(after rest: ArraySlice<LayerSpec>) -> Initializer {
        for spec in rest {
            switch spec {
            case .relu, .leakyReLU, .prelu, .elu, .gelu, .silu, .softplus: return .heNormal
            case .sigmoid, .tanh: return .xavierNormal
            case .dense, .conv, .residual: return .heNormal
            default: continue
            }
        }
        return .heNormal
    }
}
