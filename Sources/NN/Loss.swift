// Softmax cross-entropy for integer labels or for one-hot/soft targets, with optional label
// smoothing. The loss is a sum over this rank's samples divided by `normalizer` (the size of
// the *global* batch), so summing gradients over ranks gives the global-batch mean.
import Foundation
import TensorCore

public struct LossResult {
    /// Σ over local samples of the per-sample loss (not yet divided by anything).
    public var lossSum: Double
    /// Local samples whose arg-max matched the label (or the target's arg-max).
    public var correct: Int
    public var count: Int
    public init(lossSum: Double, correct: Int, count: Int) {
        self.lossSum = lossSum; self.correct = correct; self.count = count
    }
}

public final class SoftmaxCrossEntropy {
    public let classes: Int
    public let labelSmoothing: Float
    public private(set) var probabilities: Tensor?   // (N, K)
    var dLogits: Tensor?                              // (N, K)
    /// Each sample's loss in the last forward (N), for sums that must not depend on batch order.
    public private(set) var sampleLosses: [Double] = []

    public init(classes: Int, labelSmoothing: Float = 0) {
        self.classes = classes
        self.labelSmoothing = labelSmoothing
    }

    /// Integer labels in 0..<classes. Fills the gradient (dLoss/dLogits with loss = Σ/normalizer).
    public func forward(logits: Tensor, labels: UnsafeBufferPointer<Int32>, normalizer: Int) -> (LossResult, Tensor) {
        let k = classes, eps = labelSmoothing
        return compute(logits: logits, normalizer: normalizer) { i, target in
            target.update(repeating: eps / Float(k), count: k)
            target[Int(labels[i])] += 1 - eps
            return Int(labels[i])
        }
    }

    /// Targets of shape (N, K): one-hot or any distribution per row.
    public func forward(logits: Tensor, targets: Tensor, normalizer: Int) -> (LossResult, Tensor) {
        let k = classes, eps = labelSmoothing
        return compute(logits: logits, normalizer: normalizer) { i, target in
            let row = targets.data + i * k
            var best = 0
            for j in 0..<k {
                target[j] = (1 - eps) * row[j] + eps / Float(k)
                if row[j] > row[best] { best = j }
            }
            return best
        }
    }

    private func compute(logits: Tensor, normalizer: Int,
                         target fill: (Int, UnsafeMutablePointer<Float>) -> Int) -> (LossResult, Tensor) {
        let n = logits.shape[0], k = classes
        precondition(logits.shape == [n, k], "logits \(logits.shape) for \(k) classes")
        let probs = reuse(&probabilities, [n, k])
        let grad = reuse(&dLogits, [n, k])
        let target = UnsafeMutablePointer<Float>.allocate(capacity: k)
        defer { target.deallocate() }
        var lossSum = 0.0
        var correct = 0
        sampleLosses.removeAll(keepingCapacity: true)
        let scale = 1 / Float(max(normalizer, 1))
        for i in 0..<n {
            let z = logits.data + i * k, p = probs.data + i * k, g = grad.data + i * k
            var maxZ = z[0]
            var argmax = 0
            for j in 1..<k where z[j] > maxZ { maxZ = z[j]; argmax = j }
            var sumExp: Float = 0
            for j in 0..<k { let e = expf(z[j] - maxZ); p[j] = e; sumExp += e }
            let logSum = logf(sumExp)
            let label = fill(i, target)
            if argmax == label { correct += 1 }
            var loss: Float = 0
            for j in 0..<k {
                let logP = z[j] - maxZ - logSum
                loss -= target[j] * logP
                p[j] /= sumExp
                g[j] = (p[j] - target[j]) * scale
            }
            lossSum += Double(loss)
            sampleLosses.append(Double(loss))
        }
        return (LossResult(lossSum: lossSum, correct: correct, count: n), grad)
    }
}
