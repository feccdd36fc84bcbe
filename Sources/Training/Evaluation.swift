// Distributed evaluation on the test split: loss, accuracy per class and calibration, every
// sample counted once; and, with local batch norm, the running statistics evaluation uses.
import Collectives
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
}

/// Sums over evaluated samples, laid out for one all-reduce: loss, correct, count, per-class
/// correct and count, then (count, confidence, correct) per confidence bin.
struct CalibrationSums {
    static let bins = 15
    let classes: Int
    var sums: MetricSums

    init(classes: Int, exact: Bool) {
        self.classes = classes
        sums = MetricSums(count: 3 + 2 * classes + 3 * Self.bins, exact: exact)
    }

    /// Adds a batch's loss: per sample in exact mode (so batch boundaries do not matter), as the
    /// batch's sum otherwise; its correct predictions (the loss's arg-max of the logits) and size.
    mutating func add(_ r: LossResult, sampleLosses: [Double]) {
        if sums.exact {
            for l in sampleLosses { sums.add(0, l) }
        } else {
            sums.add(0, r.lossSum)
        }
        sums.add(1, Double(r.correct)); sums.add(2, Double(r.count))
    }

    /// Adds one sample's calibration: its class probabilities and label.
    mutating func add(probabilities row: UnsafePointer<Float>, label: Int) {
        var best = 0
        for j in 1..<classes where row[j] > row[best] { best = j }
        let hit = best == label ? 1.0 : 0.0
        sums.add(3 + label, hit)
        sums.add(3 + classes + label, 1)
        let confidence = Double(row[best])
        let bin = min(Int(confidence * Double(Self.bins)), Self.bins - 1)
        let base = 3 + 2 * classes + 3 * bin
        sums.add(base, 1); sums.add(base + 1, confidence); sums.add(base + 2, hit)
    }

    /// The result over every rank's samples.
    mutating func result(_ communicator: Communicator) throws -> EvaluationResult {
        let s = try sums.global(communicator)
        let n = max(s[2], 1)
        var ece = 0.0, confidenceSum = 0.0
        for b in 0..<Self.bins {
            let base = 3 + 2 * classes + 3 * b
            let count = s[base]
            guard count > 0 else { continue }
            ece += abs(s[base + 1] / count - s[base + 2] / count) * count / n
            confidenceSum += s[base + 1]
        }
        return EvaluationResult(
            loss: s[0] / n, accuracy: s[1] / n, count: Int(s[2]),
            perClassCorrect: (0..<classes).map { Int(s[3 + $0]) },
            perClassCount: (0..<classes).map { Int(s[3 + classes + $0]) },
            expectedCalibrationError: ece, overconfidence: confidenceSum / n - s[1] / n)
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

    /// Evaluates `loader`'s dataset, or the samples `indices` of it.
    func evaluate(_ loader: BatchLoader, indices list: [Int]? = nil) throws -> EvaluationResult {
        try withEvaluationBuffers {
            let share = loader.evaluationShare(rank: rank, worldSize: worldSize, batch: config.data.evalBatch, total: list?.count)
            let chunking = chunkSize.map { Chunking(size: $0) } ?? .whole
            var sums = CalibrationSums(classes: config.data.classes, exact: config.train.exact)
            var start = share.range.lowerBound
            while start < share.range.upperBound {
                let end = min(start + share.batch, share.range.upperBound)
                let indices = list.map { Array($0[start..<end]) } ?? Array(start..<end)
                let x = loader.load(indices, epoch: 0)
                let logits = try model.forward(x, context: ForwardContext(mode: .evaluation, seed: seed, sampleIndices: indices,
                                                                          chunking: chunking))
                let (r, _) = loader.labels.withUnsafeBufferPointer { loss.forward(logits: logits, labels: $0, normalizer: 1) }
                sums.add(r, sampleLosses: loss.sampleLosses)
                let probabilities = loss.probabilities!
                for i in 0..<indices.count {
                    sums.add(probabilities: probabilities.data + i * config.data.classes, label: Int(loader.labels[i]))
                }
                start = end
            }
            return try sums.result(communicator)
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
                     String(format: "test loss %.4f  accuracy %.2f%%  samples %d  ece %.4f  ", loss, 100 * accuracy, count, expectedCalibrationError) + confidence,
                     "class  correct/total  accuracy"]
        for k in 0..<perClassCount.count {
            let acc = perClassCount[k] > 0 ? 100 * Double(perClassCorrect[k]) / Double(perClassCount[k]) : 0
            lines.append(String(format: "%5d  %7d/%-5d  %6.2f%%", k, perClassCorrect[k], perClassCount[k], acc))
        }
        return lines.joined(separator: "\n")
    }
}
