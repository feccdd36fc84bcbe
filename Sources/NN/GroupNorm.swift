// Group normalisation (Wu & He 2018), with layer norm (one group) and instance norm (one group
// per channel) as its special cases. Statistics are per sample, so there is nothing to
// synchronise across ranks and training and evaluation compute the same thing.
// Affine parameters are per channel (per feature for 2-D input).
import TensorCore

public final class GroupNorm: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    public let groups: Int
    public let epsilon: Float
    public let gamma: Parameter   // (C)
    public let beta: Parameter    // (C)
    let channels: Int, spatial: Int
    var normalized: Tensor?       // (N, C, S): x̂
    var output: Tensor?           // (N, C, S)
    var dInput: Tensor?           // (N, C, S)
    var invStd: [Float] = []      // (N, G)
    var chunking = Chunking.whole

    public init(name: String, inputShape: [Int], groups: Int, epsilon: Float = LayerDefaults.normEpsilon) throws {
        guard inputShape.count == 1 || inputShape.count == 3 else {
            throw ShapeError("\(name): normalisation expects [features] or [channels, height, width], got \(inputShape)")
        }
        guard groups >= 1, inputShape[0] % groups == 0 else {
            throw ShapeError("\(name): \(inputShape[0]) channels do not divide into \(groups) groups")
        }
        guard epsilon > 0 else { throw ShapeError("\(name): epsilon must be > 0") }
        self.name = name
        self.inputShape = inputShape
        self.groups = groups
        self.epsilon = epsilon
        channels = inputShape[0]
        spatial = inputShape.dropFirst().reduce(1, *)
        gamma = Parameter(name: "\(name).weight", shape: [channels], initializer: .ones)
        beta = Parameter(name: "\(name).bias", shape: [channels], initializer: .zeros)
    }

    public var parameters: [Parameter] { [gamma, beta] }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        let n = x.shape[0]
        let y = reuse(&output, x.shape)
        let xhat = reuse(&normalized, x.shape)
        chunking = context.chunking
        let perGroup = channels / groups, m = perGroup * spatial
        guard m > 1 else { throw ShapeError("\(name): each group holds a single value; use fewer groups") }
        invStd = [Float](repeating: 0, count: n * groups)
        for i in 0..<n {
            for g in 0..<groups {
                let base = (i * channels + g * perGroup) * spatial
                // Two passes: the mean, then squared deviations about it.
                let mean = Vector.sum(x.data + base, m) / Float(m)
                let variance = Vector.sumSquaredDeviations(x.data + base, m, from: mean) / Float(m)
                let inv = 1 / (variance + epsilon).squareRoot()
                invStd[i * groups + g] = inv
                for c in 0..<perGroup {
                    let ch = g * perGroup + c, o = base + c * spatial
                    Vector.normalize(x.data + o, xhat.data + o, y.data + o, spatial, mean: mean, inv: inv,
                                     gamma: gamma.value[ch], beta: beta.value[ch])
                }
            }
        }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        let n = dOut.shape[0]
        let xhat = normalized!
        let perGroup = channels / groups, m = perGroup * spatial
        for i in 0..<n {
            let slot = chunking.slot(ofSample: i)
            for ch in 0..<channels {
                let o = (i * channels + ch) * spatial
                let (a, b) = Vector.sumAndDot(dOut.data + o, xhat.data + o, spatial)
                beta.gradient(slot: slot)[ch] += a
                gamma.gradient(slot: slot)[ch] += b
            }
        }
        guard needInputGradient else { return nil }
        let dx = reuse(&dInput, dOut.shape)
        for i in 0..<n {
            for g in 0..<groups {
                // With dx̂ = γ·dy: dx = inv·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) over the group.
                var sumD = 0.0, sumDX = 0.0
                for c in 0..<perGroup {
                    let ch = g * perGroup + c, o = (i * channels + ch) * spatial
                    let (a, b) = Vector.sumAndDot(dOut.data + o, xhat.data + o, spatial)
                    sumD += Double(gamma.value[ch] * a)
                    sumDX += Double(gamma.value[ch] * b)
                }
                let meanD = Float(sumD / Double(m)), meanDX = Float(sumDX / Double(m))
                let inv = invStd[i * groups + g]
                for c in 0..<perGroup {
                    let ch = g * perGroup + c, o = (i * channels + ch) * spatial
                    let k = inv * gamma.value[ch]
                    // inv·(γ·dy − meanD − x̂·meanDX) = k·(dy − meanD/γ − x̂·meanDX/γ) when γ ≠ 0;
                    // written without dividing by γ:
                    let g0 = dOut.data + o, h = xhat.data + o, d = dx.data + o
                    for j in 0..<spatial { d[j] = k * g0[j] - inv * (meanD + h[j] * meanDX) }
                }
            }
        }
        return dx
    }
}
