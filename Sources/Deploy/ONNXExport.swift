// Export to ONNX (opset 17): the model's layers as standard operators, the input preprocessing
// as leading Sub/Div nodes, a stored temperature as a final Div, optionally a Softmax. Layers
// without a single ONNX operator at opset 17 (GELU, SiLU, group/layer/instance norm) are written
// as their defining formula in primitive operators, so any runtime of opset 17 runs them.
import Datasets
import Foundation
import NN
import ONNXProto
import SwiftProtobuf

public struct ExportError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum ONNXExporter {
    public static let opset: Int64 = 17
    /// IR version 8 is the one that goes with opset 17.
    public static let irVersion: Int64 = 8

    /// The model as ONNX bytes. Input "input": (N, ...input shape) float32: images as pixel values
    /// in [0, 1] (b/255), CSV rows as raw feature values. Output "logits" (N, classes), or
    /// "probabilities" with `softmax`.
    public static func export(model: Model, normalization: InputNormalization, temperature: Float,
                              classNames: [String], softmax: Bool, name: String) throws -> Data {
        var g = GraphBuilder()
        var x = "input"
        switch normalization {
        case .none: break
        case let .pixels(mean, std):
            x = g.node("Sub", [x, g.constant("normalize_mean", [mean], dims: [])])
            x = g.node("Div", [x, g.constant("normalize_std", [std], dims: [])])
        case let .features(mean, std):
            x = g.node("Sub", [x, g.constant("normalize_mean", mean.map(Float.init), dims: [mean.count])])
            x = g.node("Div", [x, g.constant("normalize_std", std.map(Float.init), dims: [std.count])])
        }
        x = try g.emit(model.layers, input: x, shape: model.inputShape)
        if temperature != 1 { x = g.node("Div", [x, g.constant("temperature", [temperature], dims: [])]) }
        if softmax { x = g.node("Softmax", [x], [g.int("axis", 1)]) }
        let outputName = softmax ? "probabilities" : "logits"
        g.nodes[g.nodes.count - 1].output = [outputName]

        var graph = Onnx_GraphProto()
        graph.name = name
        graph.node = g.nodes
        graph.initializer = g.initializers
        graph.input = [valueInfo("input", dims: model.inputShape)]
        graph.output = [valueInfo(outputName, dims: [classNames.count])]

        var m = Onnx_ModelProto()
        m.irVersion = irVersion
        var op = Onnx_OperatorSetIdProto()
        op.domain = ""
        op.version = opset
        m.opsetImport = [op]
        m.producerName = "lockstep"
        m.producerVersion = "1"
        m.graph = graph
        let input: String
        switch normalization {
        case .none: input = "the model's inputs as given"
        case .pixels: input = "pixel values scaled to [0, 1] (byte / 255), NCHW"
        case .features: input = "raw feature values, one row per sample"
        }
        m.metadataProps = [("class_names", String(decoding: try JSONSerialization.data(withJSONObject: classNames), as: UTF8.self)),
                           ("input", input), ("temperature", "\(temperature)")].map {
            var e = Onnx_StringStringEntryProto()
            e.key = $0.0
            e.value = $0.1
            return e
        }
        return try m.serializedData()
    }

    static func valueInfo(_ name: String, dims: [Int]) -> Onnx_ValueInfoProto {
        var shape = Onnx_TensorShapeProto()
        var batch = Onnx_TensorShapeProto.Dimension()
        batch.dimParam = "N"
        shape.dim = [batch] + dims.map { d in
            var dim = Onnx_TensorShapeProto.Dimension()
            dim.dimValue = Int64(d)
            return dim
        }
        var tensor = Onnx_TypeProto.Tensor()
        tensor.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        tensor.shape = shape
        var type = Onnx_TypeProto()
        type.tensorType = tensor
        var info = Onnx_ValueInfoProto()
        info.name = name
        info.type = type
        return info
    }
}
