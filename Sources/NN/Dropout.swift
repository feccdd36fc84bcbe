// Inverted dropout: in training, keep each element with probability 1−p and scale it by
// 1/(1−p), so evaluation is the identity. The mask is keyed by (seed, epoch, global sample
// index, layer, element): the same sample gets the same mask whichever rank processes it.
import TensorCore

public final class Dropout: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    public let probability: Float
    let layerIndex: Int
    var mask: Tensor?     // (N, ...): 0 or 1/(1−p)
    var output: Tensor?   // (N, ...)
    var dInput: Tensor?   // (N, ...)
    var active = false

    public init(name: String, inputShape: [Int], probability: Float, layerIndex: Int) throws {
        guard probability >= 0, probability < 1 else {
            throw ShapeError("\(name): dropout probability must be in [0, 1), got \(probability)")
        }
        self.name = name
        self.inputShape = inputShape
        self.probability = probability
        self.layerIndex = layerIndex
    }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        active = context.mode == .training && probability > 0
        guard active else { return x }
        let n = x.shape[0]
        precondition(context.sampleIndices.count == n, "dropout needs the global index of every sample")
        let inner = inputShape.reduce(1, *)
        let m = reuse(&mask, x.shape)
        let y = reuse(&output, x.shape)
        let rng = Philox(seed: context.seed)
        let scale = 1 / (1 - probability)
        for s in 0..<n {
            let stream = rng.stream(.dropout, context.epoch, context.sampleIndices[s])
            let mp = m.data + s * inner
            stream.fillUniform(mp, count: inner, first: layerIndex << 24)
            let src = x.data + s * inner, dst = y.data + s * inner
            for i in 0..<inner {
                let keep: Float = mp[i] >= probability ? scale : 0
                mp[i] = keep
                dst[i] = src[i] * keep
            }
        }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        guard needInputGradient else { return nil }
        guard active else { return dOut }
        let dx = reuse(&dInput, dOut.shape)
        Vector.multiply(dOut.data, mask!.data, dx.data, dOut.count)
        return dx
    }
}
