// Smooth activations whose derivative is a function of the input: ELU, GELU (tanh form), SiLU
// (Swish) and Softplus. Each keeps its input for backward: dx = dy · f'(x).
import Foundation
import TensorCore

/// A pointwise function with its derivative written in terms of the input.
public protocol InputDerivedFunction {
    /// Shape parameter (ELU's alpha); ignored by the others.
    static func value(_ x: Float, _ alpha: Float) -> Float
    static func derivative(_ x: Float, _ alpha: Float) -> Float
}

@inline(__always) func logistic(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

/// ELU (Clevert et al. 2016): x for x > 0, α(eˣ − 1) otherwise.
public enum ELUFunction: InputDerivedFunction {
    public static func value(_ x: Float, _ a: Float) -> Float { x > 0 ? x : a * expm1f(x) }
    public static func derivative(_ x: Float, _ a: Float) -> Float { x > 0 ? 1 : a * expf(x) }
}

/// GELU, the tanh approximation (Hendrycks & Gimpel 2016, as in BERT and GPT-2; PyTorch's
/// `approximate="tanh"`): ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
public enum GELUFunction: InputDerivedFunction {
    static let c: Float = 0.797_884_56   // √(2/π)
    public static func value(_ x: Float, _ a: Float) -> Float {
        0.5 * x * (1 + tanhf(c * (x + 0.044715 * x * x * x)))
    }
    public static func derivative(_ x: Float, _ a: Float) -> Float {
        let t = tanhf(c * (x + 0.044715 * x * x * x))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    }
}

/// SiLU / Swish (Elfwing et al. 2018; Ramachandran et al. 2017): x·σ(x).
public enum SiLUFunction: InputDerivedFunction {
    public static func value(_ x: Float, _ a: Float) -> Float { x * logistic(x) }
    public static func derivative(_ x: Float, _ a: Float) -> Float {
        let s = logistic(x)
        return s * (1 + x * (1 - s))
    }
}

/// Softplus: log(1 + eˣ), computed as max(x, 0) + log1p(e^−|x|) so it never overflows.
public enum SoftplusFunction: InputDerivedFunction {
    public static func value(_ x: Float, _ a: Float) -> Float { max(x, 0) + log1pf(expf(-abs(x))) }
    public static func derivative(_ x: Float, _ a: Float) -> Float { logistic(x) }
}

public final class InputDerivedActivation<F: InputDerivedFunction>: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    public let alpha: Float
    var input: Tensor?    // (N, ...), borrowed from the previous layer
    var output: Tensor?   // (N, ...)
    var dInput: Tensor?   // (N, ...)

    public init(name: String, inputShape: [Int], alpha: Float = LayerDefaults.eluAlpha) {
        self.name = name; self.inputShape = inputShape; self.alpha = alpha
    }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        input = x
        let y = reuse(&output, x.shape)
        let s = x.data, d = y.data
        for i in 0..<x.count { d[i] = F.value(s[i], alpha) }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        guard needInputGradient else { return nil }
        let dx = reuse(&dInput, dOut.shape)
        let x = input!.data, g = dOut.data, d = dx.data
        for i in 0..<dOut.count { d[i] = g[i] * F.derivative(x[i], alpha) }
        return dx
    }
}

public typealias ELU = InputDerivedActivation<ELUFunction>
public typealias GELU = InputDerivedActivation<GELUFunction>
public typealias SiLU = InputDerivedActivation<SiLUFunction>
public typealias Softplus = InputDerivedActivation<SoftplusFunction>
