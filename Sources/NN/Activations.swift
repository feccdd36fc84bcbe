// Activations: ReLU, LeakyReLU, PReLU (learnable slope), Sigmoid, Tanh.
import Foundation
import TensorCore

public final class ReLU: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    var output: Tensor?   // (N, ...)
    var dInput: Tensor?   // (N, ...)
    /// Set by `fuseBatchNormReLU`: the batch norm before this layer applies the ReLU in its own
    /// passes, so this layer passes its input and its output gradient through unchanged.
    public internal(set) var isFused = false

    public init(name: String, inputShape: [Int]) { self.name = name; self.inputShape = inputShape }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        if isFused { return x }
        let y = reuse(&output, x.shape)
        Vector.relu(x.data, y.data, x.count)
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        guard needInputGradient else { return nil }
        if isFused { return dOut }
        let dx = reuse(&dInput, dOut.shape)
        Vector.reluBackward(output!.data, dOut.data, dx.data, dOut.count)
        return dx
    }
}

public final class LeakyReLU: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    public let slope: Float
    var input: Tensor?    // (N, ...)
    var output: Tensor?   // (N, ...)
    var dInput: Tensor?   // (N, ...)

    public init(name: String, inputShape: [Int], slope: Float = LayerDefaults.leakyReLUSlope) {
        self.name = name; self.inputShape = inputShape; self.slope = slope
    }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        input = x
        let y = reuse(&output, x.shape)
        let s = x.data, d = y.data
        for i in 0..<x.count { d[i] = s[i] > 0 ? s[i] : slope * s[i] }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        guard needInputGradient else { return nil }
        let dx = reuse(&dInput, dOut.shape)
        let x = input!.data, g = dOut.data, d = dx.data
        for i in 0..<dOut.count { d[i] = x[i] > 0 ? g[i] : slope * g[i] }
        return dx
    }
}

/// Parametric ReLU (He et al. 2015): a learnable slope for negative inputs, one per channel
/// (the first per-sample dimension) or one shared by all.
public final class PReLU: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    public let slope: Parameter   // (C) or (1)
    let channels: Int, inner: Int
    var input: Tensor?    // (N, ...)
    var output: Tensor?   // (N, ...)
    var dInput: Tensor?   // (N, ...)
    var chunking = Chunking.whole

    public init(name: String, inputShape: [Int], perChannel: Bool = false) {
        self.name = name
        self.inputShape = inputShape
        channels = perChannel ? inputShape[0] : 1
        inner = perChannel ? inputShape.dropFirst().reduce(1, *) : inputShape.reduce(1, *)
        slope = Parameter(name: "\(name).slope", shape: [channels], initializer: .quarter)
    }

    public var parameters: [Parameter] { [slope] }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        input = x
        chunking = context.chunking
        let y = reuse(&output, x.shape)
        let n = x.shape[0]
        for s in 0..<n {
            for c in 0..<channels {
                let a = slope.value[c]
                let base = (s * channels + c) * inner
                let src = x.data + base, dst = y.data + base
                for i in 0..<inner { dst[i] = src[i] > 0 ? src[i] : a * src[i] }
            }
        }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        let n = dOut.shape[0]
        let dx = needInputGradient ? reuse(&dInput, dOut.shape) : nil
        for s in 0..<n {
            let slot = chunking.slot(ofSample: s)
            for c in 0..<channels {
                let a = slope.value[c]
                let base = (s * channels + c) * inner
                let x = input!.data + base, g = dOut.data + base
                var dSlope: Float = 0
                for i in 0..<inner where x[i] <= 0 { dSlope += g[i] * x[i] }
                slope.gradient(slot: slot)[c] += dSlope
                if let dx {
                    let d = dx.data + base
                    for i in 0..<inner { d[i] = x[i] > 0 ? g[i] : a * g[i] }
                }
            }
        }
        return dx
    }
}

/// A pointwise function whose derivative is a function of its output.
public protocol OutputDerivedFunction {
    static func value(_ x: Float) -> Float
    /// dy/dx written in terms of y.
    static func derivative(output y: Float) -> Float
}

public enum SigmoidFunction: OutputDerivedFunction {
    @inline(__always) public static func value(_ x: Float) -> Float { 1 / (1 + expf(-x)) }
    @inline(__always) public static func derivative(output y: Float) -> Float { y * (1 - y) }
}

public enum TanhFunction: OutputDerivedFunction {
    @inline(__always) public static func value(_ x: Float) -> Float { tanhf(x) }
    @inline(__always) public static func derivative(output y: Float) -> Float { 1 - y * y }
}

/// Sigmoid and tanh: y = f(x), dx = dy · f'(y), keeping only the output for backward.
public final class OutputDerivedActivation<F: OutputDerivedFunction>: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    var output: Tensor?   // (N, ...)
    var dInput: Tensor?   // (N, ...)

    public init(name: String, inputShape: [Int]) { self.name = name; self.inputShape = inputShape }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        let y = reuse(&output, x.shape)
        let s = x.data, d = y.data
        for i in 0..<x.count { d[i] = F.value(s[i]) }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        guard needInputGradient else { return nil }
        let dx = reuse(&dInput, dOut.shape)
        let y = output!.data, g = dOut.data, d = dx.data
        for i in 0..<dOut.count { d[i] = g[i] * F.derivative(output: y[i]) }
        return dx
    }
}

public typealias Sigmoid = OutputDerivedActivation<SigmoidFunction>
public typealias Tanh = OutputDerivedActivation<TanhFunction>

/// Fuses each batch norm over channels directly followed by a ReLU in `layers` (BatchNorm.appliesReLU): the
/// ReLU's passes over memory (one each way) disappear into the batch norm's, with the same bits.
/// Where a 2×2 max pool with stride 2 follows the ReLU over planes of even size, it joins them
/// (BatchNorm.poolsMax): the batch norm writes the pooled plane, again with the same bits.
/// Returns the names of the fused layers ("bn+relu" or "bn+relu+pool").
@discardableResult
public func fuseBatchNormReLU(_ layers: [Layer]) -> [String] {
    var fused = [String]()
    for i in layers.indices.dropLast() {
        guard let norm = layers[i] as? BatchNorm, norm.inputShape.count == 3, let relu = layers[i + 1] as? ReLU,
              !norm.appliesReLU, !relu.isFused else { continue }
        norm.appliesReLU = true
        relu.isFused = true
        if i + 2 < layers.count, let pool = layers[i + 2] as? MaxPool2D, !pool.isFused, pool.size == 2, pool.stride == 2,
           norm.inputShape[1] % 2 == 0, norm.inputShape[2] % 2 == 0 {
            norm.poolsMax = true
            pool.isFused = true
            fused.append("\(norm.name)+\(relu.name)+\(pool.name)")
        } else {
            fused.append("\(norm.name)+\(relu.name)")
        }
    }
    return fused
}
