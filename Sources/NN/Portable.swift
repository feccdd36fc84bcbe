// Each layer described for another runtime (ONNX export, the PyTorch loader): its kind, its
// hyperparameters and its tensors, without any training state. Layers without a portable form
// (none today) would return nil and exporters name them.
import Foundation
import TensorCore

public indirect enum PortableLayer {
    case dense(weight: Parameter, bias: Parameter?)
    case conv(weight: Parameter, bias: Parameter?, kernel: Int, stride: Int, padding: Int)
    case maxPool(size: Int, stride: Int)
    case avgPool(size: Int, stride: Int)
    /// Averages each channel's plane; the output is (N, C), flat.
    case globalAvgPool
    case flatten
    case batchNorm(gamma: Parameter, beta: Parameter, mean: Parameter, variance: Parameter, epsilon: Float)
    case groupNorm(groups: Int, gamma: Parameter, beta: Parameter, epsilon: Float)
    case relu
    case leakyReLU(slope: Float)
    case prelu(slope: Parameter)
    case sigmoid, tanh
    case elu(alpha: Float)
    /// The tanh approximation.
    case gelu
    case silu, softplus
    /// Inference-time identity (dropout).
    case identity
    case residual(inner: [Layer], shortcut: [Layer])
}

extension Layer {
    /// The layer's portable description, or nil when it has none.
    public var portable: PortableLayer? {
        switch self {
        case let l as Dense: return .dense(weight: l.weight, bias: l.bias)
        case let l as Conv2D:
            return .conv(weight: l.weight, bias: l.bias, kernel: l.geometry.kernelH, stride: l.geometry.stride, padding: l.geometry.padding)
        case let l as MaxPool2D: return .maxPool(size: l.size, stride: l.stride)
        case let l as AvgPool2D: return .avgPool(size: l.size, stride: l.stride)
        case is GlobalAvgPool: return .globalAvgPool
        case is Flatten: return .flatten
        case let l as BatchNorm:
            return .batchNorm(gamma: l.gamma, beta: l.beta, mean: l.runningMean, variance: l.runningVar, epsilon: l.epsilon)
        case let l as GroupNorm: return .groupNorm(groups: l.groups, gamma: l.gamma, beta: l.beta, epsilon: l.epsilon)
        case is ReLU: return .relu
        case let l as LeakyReLU: return .leakyReLU(slope: l.slope)
        case let l as PReLU: return .prelu(slope: l.slope)
        case is Sigmoid: return .sigmoid
        case is Tanh: return .tanh
        case let l as ELU: return .elu(alpha: l.alpha)
        case is GELU: return .gelu
        case is SiLU: return .silu
        case is Softplus: return .softplus
        case is Dropout: return .identity
        case let l as Residual: return .residual(inner: l.inner, shortcut: l.shortcut)
        default: return nil
        }
    }
}

/// The layers as JSON-ready objects (checkpoint metadata "architecture"): each has "kind",
/// "name", "input_shape", "output_shape", its hyperparameters and the names of its tensors.
public func portableDescription(_ layers: [Layer]) -> [[String: Any]] {
    layers.map { layer in
        var d: [String: Any] = ["name": layer.name, "input_shape": layer.inputShape, "output_shape": layer.outputShape]
        func set(_ kind: String, _ extra: [String: Any] = [:]) { d["kind"] = kind; d.merge(extra) { $1 } }
        switch layer.portable {
        case let .dense(w, b)?: set("dense", ["weight": w.name, "bias": b?.name ?? NSNull()])
        case let .conv(w, b, k, s, p)?: set("conv", ["weight": w.name, "bias": b?.name ?? NSNull(), "kernel": k, "stride": s, "padding": p])
        case let .maxPool(size, stride)?: set("maxpool", ["size": size, "stride": stride])
        case let .avgPool(size, stride)?: set("avgpool", ["size": size, "stride": stride])
        case .globalAvgPool?: set("global_avgpool")
        case .flatten?: set("flatten")
        case let .batchNorm(g, b, m, v, e)?:
            set("batchnorm", ["weight": g.name, "bias": b.name, "running_mean": m.name, "running_var": v.name, "epsilon": Double(e)])
        case let .groupNorm(groups, g, b, e)?: set("groupnorm", ["groups": groups, "weight": g.name, "bias": b.name, "epsilon": Double(e)])
        case .relu?: set("relu")
        case let .leakyReLU(slope)?: set("leaky_relu", ["slope": Double(slope)])
        case let .prelu(slope)?: set("prelu", ["weight": slope.name])
        case .sigmoid?: set("sigmoid")
        case .tanh?: set("tanh")
        case let .elu(alpha)?: set("elu", ["alpha": Double(alpha)])
        case .gelu?: set("gelu", ["approximate": "tanh"])
        case .silu?: set("silu")
        case .softplus?: set("softplus")
        case .identity?: set("identity")
        case let .residual(inner, shortcut)?: set("residual", ["inner": portableDescription(inner), "shortcut": portableDescription(shortcut)])
        case nil: set("unsupported", ["type": "\(type(of: layer))"])
        }
        return d
    }
}
