// Distributed evaluation on the test split: loss, accuracy per class and calibration, every
// sample counted once; and, with local batch norm, the running statistics evaluation uses.
import Collectives
import Foundation
import Datasets
import NN
import TensorCore

public struct EvaluationResult {
    public var loss: Double
    public var accuracy: Double
    public var count: Int
    public var perClassCorrect: [Int]
    public var perClassCount: [Int]
    /// Expected calibration error over 15 equal-width confidence bins (Guo et al. 2017).
    public var expectedCalibrationError: Double
    /// Mean confidence minus accuracy: > 0 over-confident, < 0 under-confident.
    public var overconfidence: Double
    /// Largest |confidence − accuracy| of a non-empty bin.
    public var maximumCalibrationError: Double
    /// Mean −log p(label), from the logits in Double (no label smoothing).
    public var negativeLogLikelihood: Double
    /// Mean Σ_k (p_k − [k = label])² (Brier 1950, multi-class form; 0 best, 2 worst).
    public var brierScore: Double
    /// The confidence bins behind ECE and MCE, for a reliability diagram.
    public var reliability: [ReliabilityBin]
    /// The softmax temperature the logits were divided by (1: uncalibrated).
    public var temperature: Double = 1
}

public struct ReliabilityBin: Sendable, Equatable {
    public var lower: Double, upper: Double
    public var count: Int
    public var confidence: Double   // mean top-class probability in the bin
    public var accuracy: Double
}

/// Sums over evaluated samples, laid out for one all-reduce: loss, correct, count, per-class
/// correct and count, (count, confidence, correct) per confidence bin, then NLL and Brier sums.
struct CalibrationSums {
    static let bins = 15
    let classes: Int
    var sums: MetricSums

    init(classes: Int) {
        self.classes = classes
        sums = MetricSums(count: 3 + 2 * classes + 3 * Self.bins + 2)
    }

    /// Adds a batch's loss per sample (so batch boundaries do not matter), its correct
    /// predictions (the loss's arg-max of the logits) and size.
    mutating func add(_ r: LossResult, sampleLosses: [Double]) {
        for l in sampleLosses { sums.add(0, l) }
        sums.add(1, Double(r.correct)); sums.add(2, Double(r.count))
    }

    /// Adds one sample's calibration: its logits, class probabilities and label.
    mutating func add(logits z: UnsafePointer<Float>, probabilities row: UnsafePointer<Float>, label: Int) {
        var best = 0
        for j in 1..<classes where row[j] > row[best] { best = j }
        let hit = best == label ? 1.0 : 0.0
        sums.add(3 + label, hit)
        sums.add(3 + classes + label, 1)
        let confidence = Double(row[best])
        let bin = min(Int(confidence * Double(Self.bins)), Self.bins - 1)
        let base = 3 + 2 * classes + 3 * bin
        sums.add(base, 1); sums.add(base + 1, confidence); sums.add(base + 2, hit)
        var brier = 0.0
        for j in 0..<classes {
            let d = Double(row[j]) - (j == label ? 1 : 0)
            brier += d * d
        }
        let tail = 3 + 2 * classes + 3 * Self.bins
        sums.add(tail, negativeLogLikelihood(UnsafeBufferPointer(start: z, count: classes), label: label))
        sums.add(tail + 1, brier)
    }

    /// The result over every rank's samples.
    mutating func result(_ communicator: Communicator) throws -> EvaluationResult {
        let s = try sums.global(communicator)
        let n = max(s[2], 1)
        var ece = 0.0, mce = 0.0, confidenceSum = 0.0
        var bins = [ReliabilityBin]()
        for b in 0..<Self.bins {
            let base = 3 + 2 * classes + 3 * b
            let count = s[base]
            let (lo, hi) = (Double(b) / Double(Self.bins), Double(b + 1) / Double(Self.bins))
            guard count > 0 else { bins.append(ReliabilityBin(lower: lo, upper: hi, count: 0, confidence: 0, accuracy: 0)); continue }
            let gap = abs(s[base + 1] / count - s[base + 2] / count)
            ece += gap * count / n
            mce = max(mce, gap)
            confidenceSum += s[base + 1]
            bins.append(ReliabilityBin(lower: lo, upper: hi, count: Int(count), confidence: s[base + 1] / count, accuracy: s[base + 2] / count))
        }
        let tail = 3 + 2 * classes + 3 * Self.bins
        return EvaluationResult(
            loss: s[0] / n, accuracy: s[1] / n, count: Int(s[2]),
            perClassCorrect: (0..<classes).map { Int(s[3 + $0]) },
            perClassCount: (0..<classes).map { Int(s[3 + classes + $0]) },
            expectedCalibrationError: ece, overconfidence: confidenceSum / n - s[1] / n,
            maximumCalibrationError: mce, negativeLogLikelihood: s[tail] / n, brierScore: s[tail + 1] / n,
            reliability: bins)
    }
}

extension Trainer {
    /// Exact distributed evaluation: each rank takes a disjoint contiguous part of the test set
    /// and sums are all-reduced, so every sample counts exactly once. In exact mode ranks take
    /// whole chunks, evaluate chunk by chunk and sum exactly, so the results have the same bits
    /// for any number of ranks and any eval_batch.
    public func evaluate() throws -> EvaluationResult { try evaluate(testLoader) }

    /// The held-out part of the training split (data.validation_split), or nil without one.
    public func evaluateValidation() throws -> EvaluationResult? {
        validationIndices.isEmpty ? nil : try evaluate(validationLoader, indices: validationIndices)
    }

    /// Evaluates `loader`'s dataset, or the samples `indices` of it, with the logits divided by
    /// `temperature`. `onLogits` sees each batch's (scaled) logits and labels.
    func evaluate(_ loader: BatchLoader, indices list: [Int]? = nil,
                  onLogits: ((Tensor, [Int32]) -> Void)? = nil) throws -> EvaluationResult {
        try withEvaluationBuffers {
            let share = loader.evaluationShare(rank: rank, worldSize: worldSize, batch: config.data.evalBatch, total: list?.count)
            let chunking = chunkSize.map { Chunking(size: $0) } ?? .whole
            var sums = CalibrationSums(classes: config.data.classes)
            var start = share.range.lowerBound
            while start < share.range.upperBound {
                let end = min(start + share.batch, share.range.upperBound)
                let indices = list.map { Array($0[start..<end]) } ?? Array(start..<end)
                let batch = try loader.load(indices, epoch: 0)
                let next = min(end + share.batch, share.range.upperBound)
                if end < next { loader.prefetch(list.map { Array($0[end..<next]) } ?? Array(end..<next), epoch: 0) }
                let logits = try model.forward(batch.x, context: ForwardContext(mode: .evaluation, seed: seed, sampleIndices: indices,
                                                                          chunking: chunking))
                if temperature != 1 {
                    let inverse = 1 / temperature
                    for i in 0..<logits.count { logits.data[i] *= inverse }
                }
                onLogits?(logits, batch.labels)
                let (r, _) = batch.labels.withUnsafeBufferPointer { loss.forward(logits: logits, labels: $0, normalizer: 1) }
                sums.add(r, sampleLosses: loss.sampleLosses)
                let probabilities = loss.probabilities!
                for i in 0..<indices.count {
                    sums.add(logits: logits.data + i * config.data.classes,
                             probabilities: probabilities.data + i * config.data.classes, label: Int(batch.labels[i]))
                }
                start = end
            }
            var result = try sums.result(communicator)
            result.temperature = Double(temperature)
            return result
        }
    }

    /// With local batch norm, each rank's running statistics differ; evaluation uses their
    /// average (or rank 0's) and then restores this rank's own.
    func withEvaluationBuffers<R>(_ body: () throws -> R) throws -> R {
        guard config.bn.mode == .local, worldSize > 1, model.buffers.count > 0 else { return try body() }
        let own = Array(model.buffers.flatValues)
        switch config.bn.localEvalStats {
        case .average:
            try communicator.allReduce(model.buffers.flatValues, op: .sum)
            let scale = 1 / Float(worldSize)
            for i in 0..<model.buffers.count { model.buffers.values[i] *= scale }
        case .rank0:
            try communicator.broadcast(UnsafeMutableRawBufferPointer(model.buffers.flatValues), root: 0)
        }
        defer { _ = own.withUnsafeBufferPointer { model.buffers.flatValues.update(fromContentsOf: $0) } }
        return try body()
    }

    /// Largest difference across ranks of any running mean and any running variance (local BN).
    func localStatisticsSpread() throws -> (mean: Double, variance: Double)? {
        guard config.bn.mode == .local, worldSize > 1 else { return nil }
        var hi = Array(model.buffers.flatValues), lo = hi
        try communicator.allReduce(&hi, op: .max)
        try communicator.allReduce(&lo, op: .min)
        var spreadMean = 0.0, spreadVar = 0.0
        for p in model.buffers.entries {
            for i in p.offset..<(p.offset + p.count) {
                let d = Double(hi[i] - lo[i])
                if p.name.hasSuffix("running_mean") { spreadMean = max(spreadMean, d) } else { spreadVar = max(spreadVar, d) }
            }
        }
        return (spreadMean, spreadVar)
    }
}

extension EvaluationResult {
    /// What `lockstep eval` prints: loss, accuracy, calibration and a per-class table.
    public func report(title: String) -> String {
        let confidence = overconfidence >= 0 ? String(format: "over-confident by %.3f", overconfidence)
                                             : String(format: "under-confident by %.3f", -overconfidence)
        var lines = [title,
                     String(format: "test loss %.4f  accuracy %.2f%%  samples %d", loss, 100 * accuracy, count),
                     String(format: "calibration: ece %.4f  mce %.4f  nll %.4f  brier %.4f  ", expectedCalibrationError,
                            maximumCalibrationError, negativeLogLikelihood, brierScore) + confidence
                        + (temperature != 1 ? String(format: "  (temperature %.3f)", temperature) : ""),
                     "class  correct/total  accuracy"]
        for k in 0..<perClassCount.count {
            let acc = perClassCount[k] > 0 ? 100 * Double(perClassCorrect[k]) / Double(perClassCount[k]) : 0
            lines.append(String(format: "%5d  %7d/%-5d  %6.2f%%", k, perClassCorrect[k], perClassCount[k], acc))
        }
        return lines.joined(separator: "\n")
    }
}


/// −log softmax(scale · z)[label] in Double, with the largest scaled logit subtracted first so
/// nothing overflows (scale > 0; temperature scaling passes 1/T).
func negativeLogLikelihood(_ z: UnsafeBufferPointer<Float>, label: Int, scale: Double = 1) -> Double {
    var top = scale * Double(z[0])
    for v in z { top = max(top, scale * Double(v)) }
    var partition = 0.0
    for v in z { partition += exp(scale * Double(v) - top) }
    return top + log(partition) - scale * Double(z[label])
}
