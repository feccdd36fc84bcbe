// Synchronized batch norm: BatchNorm whose statistics and gradient sums are all-reduced over
// the ranks (exact integer words, so the sums do not depend on how samples are spread).
import Collectives

/// Batch norm whose batch is the global batch: one all-reduce of [Σx, Σx², count] per channel in
/// forward and one of [Σdy, Σdy·x̂] in backward. Correct when ranks hold different numbers of
/// samples, including none. With one rank it computes exactly what BatchNorm computes.
public final class SyncBatchNorm: BatchNorm {
    let communicator: Communicator

    public init(name: String, inputShape: [Int], momentum: Float = LayerDefaults.batchNormMomentum, epsilon: Float = LayerDefaults.normEpsilon,
                communicator: Communicator) throws {
        self.communicator = communicator
        try super.init(name: name, inputShape: inputShape, momentum: momentum, epsilon: epsilon)
    }

    override func reduceExact(_ packed: UnsafeMutableBufferPointer<Int64>) throws {
        try communicator.allReduce(packed, op: .sum)   // the identity on one rank
    }
}
