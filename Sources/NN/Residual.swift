// Residual blocks (He et al. 2016): y = F(x) + P(x), where F is a list of inner layers and P is
// the identity, or a projection (1×1 conv with stride, then batch norm) when F changes the shape.
// Backward sends dy through both branches and adds their input gradients.
import TensorCore

/// When a residual block projects its shortcut.
public enum ResidualProjection: String, CaseIterable, Sendable {
    /// Only when the inner layers change the shape (the usual choice).
    case auto
    /// Always (a 1×1 conv + BN even when shapes agree).
    case always
    /// Never: shapes must agree.
    case never
}

public final class Residual: Layer {
    public let name: String
    public let inputShape: [Int], outputShape: [Int]
    public let inner: [Layer]
    /// The shortcut's layers (empty for the identity).
    public let shortcut: [Layer]
    var output: Tensor?   // (N, ...)
    var dInput: Tensor?   // (N, ...)

    public init(name: String, inputShape: [Int], inner: [Layer], shortcut: [Layer]) throws {
        guard let last = inner.last else { throw ShapeError("\(name): a residual block needs inner layers") }
        let shortcutShape = shortcut.last?.outputShape ?? inputShape
        guard shortcutShape == last.outputShape else {
            throw ShapeError("\(name): the inner layers give \(last.outputShape) but the shortcut gives \(shortcutShape); use projection: auto")
        }
        self.name = name
        self.inputShape = inputShape
        self.outputShape = last.outputShape
        self.inner = inner
        fuseBatchNormReLU(inner)
        fuseBatchNormReLU(shortcut)
        self.shortcut = shortcut
    }

    public var parameters: [Parameter] { (inner + shortcut).flatMap { $0.parameters } }
    public var buffers: [Parameter] { (inner + shortcut).flatMap { $0.buffers } }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        var h = x
        for layer in inner { h = try layer.forward(h, context: context) }
        var s = x
        for layer in shortcut { s = try layer.forward(s, context: context) }
        let y = reuse(&output, h.shape)
        y.data.update(from: h.data, count: h.count)
        Vector.add(s.data, y.data, y.count)
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        // Inner branch; every layer but the first needs its input gradient.
        var g: Tensor? = dOut
        for (i, layer) in inner.enumerated().reversed() {
            g = try layer.backward(g!, needInputGradient: i > 0 || needInputGradient)
            if g == nil { break }
        }
        var gs: Tensor? = dOut
        for (i, layer) in shortcut.enumerated().reversed() {
            gs = try layer.backward(gs!, needInputGradient: i > 0 || needInputGradient)
            if gs == nil { break }
        }
        guard needInputGradient, let g, let gs else { return nil }
        let dx = reuse(&dInput, g.shape)
        dx.data.update(from: g.data, count: g.count)
        Vector.add(gs.data, dx.data, dx.count)
        return dx
    }
}
