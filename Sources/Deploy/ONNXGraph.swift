// Building an ONNX graph layer by layer: fresh value names, float initializers, attributes, and
// the operator (or formula) each portable layer becomes. Shapes exclude the batch dimension.
import Foundation
import NN
import ONNXProto

struct GraphBuilder {
    var nodes: [Onnx_NodeProto] = []
    var initializers: [Onnx_TensorProto] = []
    var counter = 0

    mutating func fresh(_ base: String) -> String {
        counter += 1
        return "\(base)_\(counter)"
    }

    /// A float initializer; returns its name.
    mutating func constant(_ name: String, _ values: [Float], dims: [Int]) -> String {
        var t = Onnx_TensorProto()
        t.name = initializers.contains { $0.name == name } ? fresh(name) : name
        t.dims = dims.map(Int64.init)
        t.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        var raw = Data(capacity: 4 * values.count)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw.append(contentsOf: $0) } }
        t.rawData = raw
        initializers.append(t)
        return t.name
    }

    mutating func int64s(_ name: String, _ values: [Int]) -> String {
        var t = Onnx_TensorProto()
        t.name = fresh(name)
        t.dims = [Int64(values.count)]
        t.dataType = Int32(Onnx_TensorProto.DataType.int64.rawValue)
        t.int64Data = values.map(Int64.init)
        initializers.append(t)
        return t.name
    }

    mutating func parameter(_ p: Parameter, dims: [Int]? = nil) -> String {
        constant(p.name, Array(p.values), dims: dims ?? p.shape)
    }

    func int(_ name: String, _ v: Int) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name; a.type = .int; a.i = Int64(v)
        return a
    }

    func ints(_ name: String, _ v: [Int]) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name; a.type = .ints; a.ints = v.map(Int64.init)
        return a
    }

    func float(_ name: String, _ v: Float) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name; a.type = .float; a.f = v
        return a
    }

    /// Appends a node with one output; returns the output's name.
    mutating func node(_ op: String, _ inputs: [String], _ attributes: [Onnx_AttributeProto] = []) -> String {
        var n = Onnx_NodeProto()
        n.opType = op
        n.name = fresh(op)
        n.input = inputs
        n.output = [fresh(op.lowercased())]
        n.attribute = attributes
        nodes.append(n)
        return n.output[0]
    }

    /// Emits `layers` applied to `input` of per-sample shape `shape`; returns the output name.
    mutating func emit(_ layers: [Layer], input: String, shape: [Int]) throws -> String {
        var x = input
        for layer in layers {
            guard let p = layer.portable else {
                throw ExportError("\(layer.name): \(type(of: layer)) has no ONNX form")
            }
            x = try emit(p, layer: layer, input: x)
        }
        return x
    }

    mutating func emit(_ p: PortableLayer, layer: Layer, input x: String) throws -> String {
        let shape = layer.inputShape
        switch p {
        case let .dense(weight, bias):
            return node("Gemm", [x, parameter(weight)] + (bias.map { [parameter($0)] } ?? []), [int("transB", 1)])
        case let .conv(weight, bias, kernel, stride, padding):
            return node("Conv", [x, parameter(weight)] + (bias.map { [parameter($0)] } ?? []),
                        [ints("kernel_shape", [kernel, kernel]), ints("strides", [stride, stride]),
                         ints("pads", [padding, padding, padding, padding])])
        case let .maxPool(size, stride):
            return node("MaxPool", [x], [ints("kernel_shape", [size, size]), ints("strides", [stride, stride])])
        case let .avgPool(size, stride):
            return node("AveragePool", [x], [ints("kernel_shape", [size, size]), ints("strides", [stride, stride])])
        case .globalAvgPool:
            return node("Flatten", [node("GlobalAveragePool", [x])], [int("axis", 1)])
        case .flatten:
            return node("Flatten", [x], [int("axis", 1)])
        case let .batchNorm(gamma, beta, mean, variance, epsilon):
            return node("BatchNormalization", [x, parameter(gamma), parameter(beta), parameter(mean), parameter(variance)],
                        [float("epsilon", epsilon)])
        case let .groupNorm(groups, gamma, beta, epsilon):
            // (x − mean)/√(var + ε) over each sample's group of channels, then γ·x + β per channel.
            let grouped = node("Reshape", [x, int64s("group_shape", [0, groups, -1])])
            let mean = node("ReduceMean", [grouped], [ints("axes", [2]), int("keepdims", 1)])
            let centred = node("Sub", [grouped, mean])
            let variance = node("ReduceMean", [node("Mul", [centred, centred])], [ints("axes", [2]), int("keepdims", 1)])
            let scale = node("Sqrt", [node("Add", [variance, constant("epsilon", [epsilon], dims: [])])])
            let normalised = node("Reshape", [node("Div", [centred, scale]), int64s("shape", [0] + shape)])
            let dims = [shape[0]] + [Int](repeating: 1, count: shape.count - 1)
            return node("Add", [node("Mul", [normalised, parameter(gamma, dims: dims)]), parameter(beta, dims: dims)])
        case .relu: return node("Relu", [x])
        case let .leakyReLU(slope): return node("LeakyRelu", [x], [float("alpha", slope)])
        case let .prelu(slope):
            // A per-channel slope must broadcast against (N, C, H, W): shape it (C, 1, 1).
            let dims = slope.count == 1 ? [1] : [slope.count] + [Int](repeating: 1, count: shape.count - 1)
            return node("PRelu", [x, parameter(slope, dims: dims)])
        case .sigmoid: return node("Sigmoid", [x])
        case .tanh: return node("Tanh", [x])
        case let .elu(alpha): return node("Elu", [x], [float("alpha", alpha)])
        case .gelu:
            // ½x(1 + tanh(√(2/π)(x + 0.044715x³))), as the layer computes it.
            let cube = node("Mul", [node("Mul", [x, x]), x])
            let inner = node("Add", [x, node("Mul", [cube, constant("gelu_k", [0.044715], dims: [])])])
            let t = node("Tanh", [node("Mul", [inner, constant("gelu_c", [0.797_884_56], dims: [])])])
            let onePlus = node("Add", [t, constant("one", [1], dims: [])])
            return node("Mul", [node("Mul", [x, onePlus]), constant("half", [0.5], dims: [])])
        case .silu: return node("Mul", [x, node("Sigmoid", [x])])
        case .softplus: return node("Softplus", [x])
        case .identity: return x
        case let .residual(inner, shortcut):
            let branch = try emit(inner, input: x, shape: shape)
            let skip = shortcut.isEmpty ? x : try emit(shortcut, input: x, shape: shape)
            return node("Add", [branch, skip])
        }
    }
}
