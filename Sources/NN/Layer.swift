// The Layer protocol: explicit forward/backward pairs.
//
// `forward` keeps what `backward` needs; `backward` returns the gradient with respect to the
// input (unless told it is not needed) and *adds* into its parameters' gradients. Shapes are
// per sample (without the batch dimension) in `inputShape`/`outputShape`; tensors passed to
// forward carry the batch as their first dimension, which may be zero on a rank with no samples.
// A layer that mixes samples (a GEMM over the batch, a sum for a parameter gradient or a batch
// statistic) does so per chunk of `context.chunking` and adds chunk j's parameter gradients into
// `Parameter.gradient(slot:)`, so that exact mode gives the same bits on any number of ranks.
import TensorCore

public enum Mode: Sendable { case training, evaluation }

/// What a forward pass needs besides its input: the mode and the keys of its randomness.
public struct ForwardContext {
    public var mode: Mode
    public var seed: UInt64
    public var epoch: Int
    /// Global dataset index of each local sample, so dropout masks do not depend on the rank.
    public var sampleIndices: [Int]
    /// How layers split the local batch (exact mode) and where chunk gradients go.
    public var chunking: Chunking

    public init(mode: Mode, seed: UInt64 = 0, epoch: Int = 0, sampleIndices: [Int] = [], chunking: Chunking = .whole) {
        self.mode = mode
        self.seed = seed
        self.epoch = epoch
        self.sampleIndices = sampleIndices
        self.chunking = chunking
    }
}

public struct ShapeError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public protocol Layer: AnyObject {
    /// Dotted name prefix of this layer's parameters, e.g. "conv1".
    var name: String { get }
    var inputShape: [Int] { get }
    var outputShape: [Int] { get }
    var parameters: [Parameter] { get }
    var buffers: [Parameter] { get }
    func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor
    func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor?
}

extension Layer {
    public var parameters: [Parameter] { [] }
    public var buffers: [Parameter] { [] }
}

@inline(__always)
func batchShape(_ n: Int, _ shape: [Int]) -> [Int] { [n] + shape }
