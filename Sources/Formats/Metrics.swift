// The metrics schema: one type per kind of metrics.jsonl line ("epoch", "train", "resume"), encoded
// by the trainer and decoded by reports with the same Codable types, so the two cannot drift apart.
import Foundation

/// One line per epoch (`"kind": "epoch"`).
public struct EpochMetrics: Codable, Equatable, Sendable {
    public var kind = "epoch"
    public var epoch: Int
    public var step: Int
    public var learningRate: Double
    public var trainLoss: Double
    public var trainAccuracy: Double
    /// On the held-out part of the training split (data.validation_split), when there is one.
    public var validationLoss: Double? = nil
    public var validationAccuracy: Double? = nil
    public var testLoss: Double
    public var testAccuracy: Double
    public var testSamples: Int
    /// Expected calibration error over 15 equal-width confidence bins.
    public var expectedCalibrationError: Double
    /// Mean confidence minus accuracy on the test split: > 0 over-confident.
    public var overconfidence: Double
    public var samplesPerSecond: Double
    public var secondsPerStep: Double
    public var communicationSecondsPerStep: Double
    public var gradientAllReduceSecondsPerStep: Double
    public var elapsedSeconds: Double
    public var worldSize: Int
    public var bnMode: String
    /// Local BN only: the largest difference across ranks of a running mean / variance.
    public var runningMeanSpread: Double?
    public var runningVarSpread: Double?
    /// Several ranks: each rank's compute time per step (the step's time outside collectives),
    /// and the ranks slower than the median by more than check.straggler_threshold.
    public var rankComputeSecondsPerStep: [Double]? = nil
    public var stragglers: [Int]? = nil

    public init(epoch: Int, step: Int, learningRate: Double, trainLoss: Double, trainAccuracy: Double, validationLoss: Double? = nil, validationAccuracy: Double? = nil, testLoss: Double, testAccuracy: Double, testSamples: Int, expectedCalibrationError: Double, overconfidence: Double, samplesPerSecond: Double, secondsPerStep: Double, communicationSecondsPerStep: Double, gradientAllReduceSecondsPerStep: Double, elapsedSeconds: Double, worldSize: Int, bnMode: String, runningMeanSpread: Double? = nil, runningVarSpread: Double? = nil, rankComputeSecondsPerStep: [Double]? = nil, stragglers: [Int]? = nil) {
        self.epoch = epoch
        self.step = step
        self.learningRate = learningRate
        self.trainLoss = trainLoss
        self.trainAccuracy = trainAccuracy
        self.validationLoss = validationLoss
        self.validationAccuracy = validationAccuracy
        self.testLoss = testLoss
        self.testAccuracy = testAccuracy
        self.testSamples = testSamples
        self.expectedCalibrationError = expectedCalibrationError
        self.overconfidence = overconfidence
        self.samplesPerSecond = samplesPerSecond
        self.secondsPerStep = secondsPerStep
        self.communicationSecondsPerStep = communicationSecondsPerStep
        self.gradientAllReduceSecondsPerStep = gradientAllReduceSecondsPerStep
        self.elapsedSeconds = elapsedSeconds
        self.worldSize = worldSize
        self.bnMode = bnMode
        self.runningMeanSpread = runningMeanSpread
        self.runningVarSpread = runningVarSpread
        self.rankComputeSecondsPerStep = rankComputeSecondsPerStep
        self.stragglers = stragglers
    }

    enum CodingKeys: String, CodingKey {
        case kind, epoch, step, overconfidence
        case learningRate = "lr"
        case trainLoss = "train_loss", trainAccuracy = "train_accuracy"
        case validationLoss = "val_loss", validationAccuracy = "val_accuracy"
        case testLoss = "test_loss", testAccuracy = "test_accuracy", testSamples = "test_samples"
        case expectedCalibrationError = "ece"
        case samplesPerSecond = "samples_per_second", secondsPerStep = "seconds_per_step"
        case communicationSecondsPerStep = "communication_seconds_per_step"
        case gradientAllReduceSecondsPerStep = "gradient_allreduce_seconds_per_step"
        case elapsedSeconds = "elapsed_seconds", worldSize = "world_size", bnMode = "bn_mode"
        case runningMeanSpread = "running_mean_spread", runningVarSpread = "running_var_spread"
        case rankComputeSecondsPerStep = "rank_compute_seconds_per_step", stragglers
    }
}

/// One line every `train.log_every` steps (`"kind": "train"`).
public struct TrainProgress: Codable, Equatable, Sendable {
    public var kind = "train"
    public var step: Int
    /// Fractional epochs done.
    public var epoch: Double
    public var learningRate: Double
    public var trainLoss: Double
    public var trainAccuracy: Double

    public init(step: Int, epoch: Double, learningRate: Double, trainLoss: Double, trainAccuracy: Double) {
        self.step = step
        self.epoch = epoch
        self.learningRate = learningRate
        self.trainLoss = trainLoss
        self.trainAccuracy = trainAccuracy
    }

    enum CodingKeys: String, CodingKey {
        case kind, step, epoch
        case learningRate = "lr", trainLoss = "train_loss", trainAccuracy = "train_accuracy"
    }
}

/// One line where a run was resumed (`"kind": "resume"`): the records before it are those an
/// uninterrupted run would have written up to `step` (later ones were cut away, RunHistory.swift).
public struct ResumeRecord: Codable, Equatable, Sendable {
    public var kind = "resume"
    /// The restored checkpoint's step (0 when `--resume auto` found no checkpoint).
    public var step: Int
    public var worldSize: Int
    /// Unix seconds.
    public var wallTime: Double

    public init(step: Int, worldSize: Int, wallTime: Double = Date().timeIntervalSince1970) {
        self.step = step
        self.worldSize = worldSize
        self.wallTime = wallTime
    }

    enum CodingKeys: String, CodingKey {
        case kind, step
        case worldSize = "world_size", wallTime = "wall_time"
    }
}

/// A metrics.jsonl that cannot be read.
public struct MetricsError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum MetricsCoding {
    /// One JSON line, keys sorted.
    public static func line<T: Encodable>(_ record: T) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return (try? encoder.encode(record)) ?? Data("{}".utf8)
    }

    /// The numbers of a record by key, for TensorBoard scalars.
    public static func numbers(_ line: Data) -> [(String, Double)] {
        guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else { return [] }
        return object.compactMap { key, value in
            guard key != "step", key != "epoch", !(value is String), let v = (value as? NSNumber)?.doubleValue else { return nil }
            return (key, v)
        }.sorted { $0.0 < $1.0 }
    }
}

/// What `Trainer.onStep` receives after an optimizer step.
public struct StepEnd: Sendable {
    /// Steps taken so far (1 after the first) and the epoch they belong to (from 1).
    public var step: Int, epoch: Int
    public var learningRate: Double
    /// Over this rank's samples of the step: summed loss, correct predictions, samples.
    public var lossSum: Double, correct: Int, samples: Int

    public init(step: Int, epoch: Int, learningRate: Double, lossSum: Double, correct: Int, samples: Int) {
        self.step = step
        self.epoch = epoch
        self.learningRate = learningRate
        self.lossSum = lossSum
        self.correct = correct
        self.samples = samples
    }
}
