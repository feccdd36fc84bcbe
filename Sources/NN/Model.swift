// A model: a list of layers run in order, with its parameters in one arena and its buffers
// (running statistics) in another.
import Collectives
import Foundation
import TensorCore

public final class Model {
    public let layers: [Layer]
    public let inputShape: [Int]
    public let outputShape: [Int]
    public let parameters: Arena
    public let buffers: Arena
    /// When set, forward and backward add each layer's seconds here (for `lockstep bench`).
    public var timing: LayerTiming?
    /// Called after each layer's backward with the arena offset where that layer's parameters
    /// start: gradients from there to the end of the arena are final for this backward (layers
    /// own contiguous, ascending ranges). Used to start all-reduces while backward still runs.
    public var afterLayerBackward: ((Int) throws -> Void)?
    /// The arena offset of each layer's first parameter (the next one's, for a layer without any).
    public let parameterStarts: [Int]

    /// `spareGradientFloats` floats follow the gradients in memory (Arena.gradsWithSpare).
    public init(layers: [Layer], inputShape: [Int], spareGradientFloats: Int = 0) {
        self.layers = layers
        fuseBatchNormReLU(layers)   // same bits, two fewer passes over memory per pair
        self.inputShape = inputShape
        self.outputShape = layers.last?.outputShape ?? inputShape
        parameters = Arena(layers.flatMap { $0.parameters }, withGradients: true, spareGradientFloats: spareGradientFloats)
        var starts = [Int](), offset = 0
        for layer in layers {
            starts.append(offset)
            offset += layer.parameters.reduce(0) { $0 + $1.count }
        }
        parameterStarts = starts
        buffers = Arena(layers.flatMap { $0.buffers }, withGradients: false)
    }

    /// Initial parameter values from (seed): identical on every rank, independent of world size.
    public func initialize(seed: UInt64) {
        parameters.initialize(seed: seed)
        buffers.initialize(seed: seed)
    }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        var h = x
        if let timing {
            for (i, layer) in layers.enumerated() {
                let t0 = monotonicSeconds()
                h = try layer.forward(h, context: context)
                timing.forward[i] += monotonicSeconds() - t0
            }
            return h
        }
        for layer in layers { h = try layer.forward(h, context: context) }
        return h
    }

    /// Back-propagates dLoss/dOutput; parameter gradients are *added* to the gradient arena.
    public func backward(_ dOut: Tensor) throws {
        var g = dOut
        // Layers before the first one with parameters need no input gradient.
        let firstTrainable = layers.firstIndex { !$0.parameters.isEmpty } ?? layers.count
        for (i, layer) in layers.enumerated().reversed() {
            let t0 = timing == nil ? 0 : monotonicSeconds()
            let next = try layer.backward(g, needInputGradient: i > firstTrainable)
            if let timing { timing.backward[i] += monotonicSeconds() - t0 }
            try afterLayerBackward?(parameterStarts[i])
            guard let next else { break }
            g = next
        }
    }

    public func zeroGrads() { parameters.zeroGrads() }

    /// Names and shapes of every parameter and buffer, in order.
    public var layoutDescription: String { parameters.layoutDescription + "|" + buffers.layoutDescription }

    /// Every parameter and buffer by name.
    public var namedTensors: [Parameter] { parameters.entries + buffers.entries }

    public var parameterCount: Int { parameters.count }

    /// A short table of layers and shapes for logs.
    public var summary: String {
        var lines = ["input \(inputShape)"]
        for layer in layers {
            let count = layer.parameters.reduce(0) { $0 + $1.count }
            lines.append("\(layer.name) → \(layer.outputShape)" + (count > 0 ? "  (\(count) parameters)" : ""))
        }
        lines.append("total \(parameterCount) parameters")
        return lines.joined(separator: "\n")
    }
}

public final class LayerTiming {
    public var forward: [Double]
    public var backward: [Double]
    public init(layers: Int) {
        forward = Array(repeating: 0, count: layers)
        backward = Array(repeating: 0, count: layers)
    }
}
