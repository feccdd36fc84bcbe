// Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one
// scalar T divides the logits; it is fitted to minimise the NLL on the validation split, never
// the test split, and stored in the checkpoint's metadata where eval (and prediction) use it.
import Collectives
import Foundation
import NN
import TensorCore

public struct CalibrationError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct TemperatureFit: Sendable {
    public var temperature: Double
    /// Mean validation NLL at T = 1 and at the fitted T.
    public var nllBefore: Double
    public var nllAfter: Double
    /// Golden-section iterations (the same on every rank).
    public var iterations: Int
    /// T > 1 softens the probabilities: the model was over-confident; T < 1: under-confident.
    public var verdict: String {
        temperature > 1 ? String(format: "over-confident (T = %.3f > 1 softens its probabilities)", temperature)
                        : String(format: "under-confident (T = %.3f < 1 sharpens its probabilities)", temperature)
    }
}

extension Trainer {
    /// Fits T on the validation split. Every rank keeps the logits of its share; each trial T
    /// sums the NLL over ranks (exactly in exact mode), so all ranks follow the same search and
    /// agree on T. NLL(β) = Σ logsumexp(β·z) − β·z_label is convex in β = 1/T, so a
    /// golden-section search over β ∈ [1/20, 20] finds its minimum; 60 iterations shrink the
    /// bracket by 0.618^60 ≈ 3·10⁻¹³ of its width, far below what the NLL can resolve.
    public func fitTemperature() throws -> TemperatureFit {
        guard !validationIndices.isEmpty else {
            throw CalibrationError("calibration needs a validation split: the temperature is fitted on held-out training samples, never on the test split; train with data.validation_split > 0 (for example --set data.validation_split=0.1)")
        }
        let saved = temperature
        temperature = 1
        defer { temperature = saved }
        var logits = [Float](), labels = [Int32]()
        let classes = config.data.classes
        _ = try evaluate(validationLoader, indices: validationIndices) { batch, batchLabels in
            logits.append(contentsOf: UnsafeBufferPointer(start: batch.data, count: batchLabels.count * classes))
            labels += batchLabels
        }
        func nll(_ beta: Double) throws -> Double {
            var sums = MetricSums(count: 2)
            logits.withUnsafeBufferPointer { all in
                for i in 0..<labels.count {
                    let row = UnsafeBufferPointer(rebasing: all[(i * classes)..<((i + 1) * classes)])
                    sums.add(0, negativeLogLikelihood(row, label: Int(labels[i]), scale: beta))
                    sums.add(1, 1)
                }
            }
            let s = try sums.global(communicator)
            return s[0] / max(s[1], 1)
        }
        let ratio = (5.0.squareRoot() - 1) / 2
        var lo = 1.0 / 20, hi = 20.0
        var a = hi - ratio * (hi - lo), b = lo + ratio * (hi - lo)
        var fa = try nll(a), fb = try nll(b)
        let iterations = 60
        for _ in 0..<iterations {
            if fa <= fb {
                hi = b; b = a; fb = fa
                a = hi - ratio * (hi - lo); fa = try nll(a)
            } else {
                lo = a; a = b; fa = fb
                b = lo + ratio * (hi - lo); fb = try nll(b)
            }
        }
        let beta = fa <= fb ? a : b
        let before = try nll(1), after = min(fa, fb)
        guard beta > 1.0 / 20 * 1.001, beta < 20 * 0.999 else {
            throw CalibrationError(String(format: "the validation NLL keeps falling towards T = %.3g, the edge of the search range [0.05, 20]: the model's logits look degenerate (constant, or every validation sample correct with margin)", 1 / beta))
        }
        return TemperatureFit(temperature: 1 / beta, nllBefore: before, nllAfter: after, iterations: iterations)
    }
}
