// The training configuration: every hyperparameter, read strictly from YAML.
// Defaults live here and only here; the README's config reference is generated from the same
// names (`lockstep train --print-config` prints the resolved config with every default filled).
import Collectives
import Datasets
import Foundation
import NN
import Optimizers

public struct TrainingConfig {
    public enum LocalEvalStats: String, CaseIterable { case average, rank0 }

    public struct Data {
        public var path = "/usr/share/datasets/fashion-mnist"
        public var trainSplit = "train"
        public var testSplit = "t10k"
        public var classes = 10
        /// Names of the classes, for predictions and exported models (default "0", "1", ...).
        public var classNames: [String]? = nil
        public var resolvedClassNames: [String] { classNames ?? (0..<classes).map { "\($0)" } }
        public var mean: Double? = nil
        public var std: Double? = nil
        public var augment = Augmentation()
        public var dropLast = false
        /// Samples per evaluation batch on each rank. 128 keeps evaluation's buffers small (the
        /// CNN's peak RSS: 262 MB at 128 against 721 MB at 1000, same speed and same bits).
        public var evalBatch = 128
        /// Fraction of the training split held out for validation (0: none).
        public var validationSplit = 0.0
        public var format = DataFormat.idx
        /// CSV: the files (relative to `path`) and how labels are found.
        public var trainFile = "train.csv"
        public var testFile = "test.csv"
        public var csv = CSVFormat()
        /// Image folders: grey (1) or RGB (3), the side of the square the model sees, and the
        /// shorter side each image is scaled to before the centre square is cut (0: image_size).
        public var channels = 3
        public var imageSize = 32
        public var resize = 0
        /// Image folders: read each image when it is used instead of holding the split in memory.
        public var stream = false
        /// Image folders: files in (class, name) order, or by name across the classes (numbered
        /// files keep their numbers' order, e.g. a data set exported from another format).
        public var fileOrder = FileOrder.class
        /// Streamed data (packed shards, data.stream): read, decode and augment the next batch on a
        /// background thread while the step computes. In-memory data is copied in place.
        public var prefetch = true
        /// data.format: packed: the image keys the config gives (channels, image_size, resize),
        /// checked against the packed set's shapes.
        public var packedExpects: [String: Int] = [:]
    }
    public enum DataFormat: String, CaseIterable, Sendable { case idx, cifar10, csv, folder, packed }
    public enum FileOrder: String, CaseIterable, Sendable { case `class`, name }
    public typealias OptimizerKind = OptimizerSettings.Kind
    public struct Train {
        public var epochs = 10
        public var maxSteps = 0
        public var globalBatch = 128
        public var seed = 0
        public var logEvery = 100
        public var accumulateSteps = 1
        public var labelSmoothing = 0.0
        /// All-reduce the gradients in buckets of this many MB while backward still runs
        /// (GradientBuckets; ExactGradientReducer in exact mode); 0 reduces them after backward.
        public var bucketMB = 0.0
        /// Exact mode: ranks that all run on one host sum gradients in memory they share (an
        /// MPI-3 shared window) rather than through MPI's messages; the same bits either way.
        public var sharedMemory = true
        /// Exact mode (the default): the same bits on any number of ranks (fixed chunks, integer
        /// sums; GradientSync.swift). false sums gradients in float (README, "Exact mode").
        public var exact = true
        /// Samples per chunk in exact mode: every rank holds whole chunks of the global batch.
        public var chunk = 16
        /// Samples per chunk when exact, nil when `exact` is false: the one reading of `exact`
        /// (the trainer's GradientSync, the memory plan and the reports all go through it).
        public var exactChunk: Int? { exact ? chunk : nil }
        public var earlyStopping = EarlyStopping()
    }
    public struct EarlyStopping {
        public enum Metric: String, CaseIterable, Sendable { case valLoss = "val_loss", valAccuracy = "val_accuracy" }
        /// Epochs without improvement before training stops (0: never stop early).
        public var patience = 0
        public var metric = Metric.valLoss
        /// The smallest change that counts as an improvement.
        public var minDelta = 0.0
        /// Put back the parameters of the best epoch when stopping.
        public var restoreBest = true
    }
    public struct BN {
        public var mode = BatchNormMode.sync
        public var localEvalStats = LocalEvalStats.average
    }
    public struct Check {
        public var replicasEvery = 0
        /// Seconds a collective waits for the other ranks before the job ends naming them.
        public var collectiveTimeout = CollectiveTimeout.defaultSeconds
        /// A rank whose compute time per step over an epoch exceeds the ranks' median by more
        /// than this fraction is named as a straggler in the epoch line and metrics (0: never).
        public var stragglerThreshold = 0.25
    }
    public struct Output {
        public var dir: String? = nil
    }
    public struct Conv {
        /// The algorithm of conv layers that name none: `auto` (Winograd F(4,3) for 3×3 stride-1
        /// layers of 16 channels or more), `direct` (im2col + GEMM), `winograd` or `winograd-f2`
        /// (wherever they apply). A layer's own `algorithm` must apply to it.
        public var algorithm = ConvAlgorithm.auto
    }
    public struct Checkpoint {
        public var everySteps = 0
        public var everyEpochs = 1
        public var keep = 3
    }

    public var name = "run"
    public var file = "<config>"
    public var data = Data()
    public var model: [LayerSpec] = []
    public var optimizer = OptimizerSettings()
    public var schedule = ScheduleSettings()
    public var train = Train()
    public var bn = BN()
    public var check = Check()
    public var output = Output()
    public var checkpoint = Checkpoint()
    public var conv = Conv()
    /// The resolved document (after overrides), as YAML.
    public var resolvedYAML = ""

    public init() {}

    /// Reads a config file, applies `key.path=value` overrides, and validates everything.
    public static func load(path: String, overrides: [String] = []) throws -> TrainingConfig {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ConfigError("\(path): no such config file")
        }
        guard !isDirectory.boolValue else { throw ConfigError("\(path): is a directory, not a config file") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError("\(path): cannot read the config file (permissions?)")
        }
        guard data.count <= ConfigValue.maximumBytes else {
            throw ConfigError("\(path): \(data.count) bytes, more than a config can be (\(ConfigValue.maximumBytes) bytes)")
        }
        guard let text = String(data: data, encoding: .utf8), !text.contains("\u{0}") else {
            throw ConfigError("\(path): not UTF-8 text (a binary file, or UTF-16?); a config is YAML in UTF-8")
        }
        return try parse(yaml: text, file: path, overrides: overrides)
    }

    public static func parse(yaml: String, file: String, overrides: [String] = []) throws -> TrainingConfig {
        var document = try ConfigValue.parse(yaml: yaml, file: file)
        for o in overrides {
            guard let eq = o.firstIndex(of: "="), eq != o.startIndex else {
                throw ConfigError("--set \(o): expected key.path=value")
            }
            let key = String(o[..<eq]), value = String(o[o.index(after: eq)...])
            let parsed = try ConfigValue.parse(yaml: value, file: "--set \(key)")
            do { try document.set(path: key.split(separator: ".").map(String.init), to: parsed) } catch let e as ConfigError {
                throw ConfigError("--set \(o): \(e.message)")
            }
        }
        var config = TrainingConfig()
        config.file = file
        config.resolvedYAML = document.yaml
        let root = try ConfigSection(file: file, path: "", value: document)
        config.name = try root.string("name", default: ((file as NSString).lastPathComponent as NSString).deletingPathExtension)

        try parseData(try root.section("data"), into: &config, file: file)

        guard let layers = try root.list("model"), !layers.isEmpty else {
            throw ConfigError("\(file): 'model' must be a non-empty list of layers, e.g. '- dense: {out: 10}'")
        }
        let cv = try root.section("conv")
        config.conv.algorithm = try cv.choice("algorithm", default: config.conv.algorithm)
        try cv.finish()
        config.model = try layers.enumerated().map { try parseLayer($0.element, path: "model[\($0.offset)]", file: file, classes: config.data.classes) }

        let o = try root.section("optimizer")
        config.optimizer.kind = try o.choice("name", default: config.optimizer.kind)
        config.optimizer.learningRate = try o.double("lr", default: config.optimizer.learningRate, range: 0...1e3)
        config.optimizer.momentum = try o.double("momentum", default: config.optimizer.momentum, range: 0...0.9999)
        config.optimizer.nesterov = try o.bool("nesterov", default: config.optimizer.nesterov)
        config.optimizer.weightDecay = try o.double("weight_decay", default: config.optimizer.weightDecay, range: 0...1)
        config.optimizer.decayWeightsOnly = try o.bool("decay_weights_only", default: config.optimizer.decayWeightsOnly)
        config.optimizer.beta1 = try o.double("beta1", default: config.optimizer.beta1, range: 0...0.99999)
        config.optimizer.beta2 = try o.double("beta2", default: config.optimizer.beta2, range: 0...0.9999999)
        config.optimizer.epsilon = try o.double("epsilon", default: config.optimizer.epsilon, range: 1e-20...1)
        config.optimizer.scaleLR = try o.choice("scale_lr", default: config.optimizer.scaleLR)
        config.optimizer.referenceBatch = try o.int("reference_batch", default: config.optimizer.referenceBatch, min: 1)
        config.optimizer.alpha = try o.double("alpha", default: config.optimizer.alpha, range: 0...0.99999)
        config.optimizer.centered = try o.bool("centered", default: config.optimizer.centered)
        config.optimizer.clipNorm = try o.optionalDouble("clip_norm")
        config.optimizer.shard = try o.choice("shard", default: config.optimizer.shard)
        try o.finish()

        let s = try root.section("schedule")
        config.schedule.kind = try s.choice("name", default: config.schedule.kind)
        config.schedule.warmupEpochs = try s.double("warmup_epochs", default: config.schedule.warmupEpochs, range: 0...1e6)
        config.schedule.stepEpochs = try s.double("step_epochs", default: config.schedule.stepEpochs, range: 1e-6...1e6)
        config.schedule.gamma = try s.double("gamma", default: config.schedule.gamma, range: 0...1)
        config.schedule.minRate = try s.double("min_lr", default: config.schedule.minRate, range: 0...1e3)
        try s.finish()

        let t = try root.section("train")
        config.train.epochs = try t.int("epochs", default: config.train.epochs, min: 1)
        config.train.maxSteps = try t.int("max_steps", default: config.train.maxSteps, min: 0)
        config.train.globalBatch = try t.int("global_batch", default: config.train.globalBatch, min: 1)
        config.train.seed = try t.int("seed", default: config.train.seed, min: 0)
        config.train.logEvery = try t.int("log_every", default: config.train.logEvery, min: 0)
        config.train.accumulateSteps = try t.int("accumulate_steps", default: config.train.accumulateSteps, min: 1)
        config.train.labelSmoothing = try t.double("label_smoothing", default: config.train.labelSmoothing, range: 0...0.999)
        config.train.bucketMB = try t.double("bucket_mb", default: config.train.bucketMB, range: 0...4096)
        config.train.exact = try t.bool("exact", default: config.train.exact)
        config.train.sharedMemory = try t.bool("shared_memory", default: config.train.sharedMemory)
        config.train.chunk = try t.int("chunk", default: config.train.chunk, min: 1)
        let es = try t.section("early_stopping")
        config.train.earlyStopping.patience = try es.int("patience", default: config.train.earlyStopping.patience, min: 0)
        config.train.earlyStopping.metric = try es.choice("metric", default: config.train.earlyStopping.metric)
        config.train.earlyStopping.minDelta = try es.double("min_delta", default: config.train.earlyStopping.minDelta, range: 0...1e6)
        config.train.earlyStopping.restoreBest = try es.bool("restore_best", default: config.train.earlyStopping.restoreBest)
        try es.finish()
        try t.finish()

        let b = try root.section("bn")
        config.bn.mode = try b.choice("mode", default: config.bn.mode)
        config.bn.localEvalStats = try b.choice("local_eval_stats", default: config.bn.localEvalStats)
        try b.finish()

        let c = try root.section("check")
        config.check.replicasEvery = try c.int("replicas_every", default: config.check.replicasEvery, min: 0)
        config.check.collectiveTimeout = try c.double("collective_timeout", default: config.check.collectiveTimeout, range: 0.1...604_800)
        config.check.stragglerThreshold = try c.double("straggler_threshold", default: config.check.stragglerThreshold, range: 0...100)
        try c.finish()

        let ck = try root.section("checkpoint")
        config.checkpoint.everySteps = try ck.int("every_steps", default: config.checkpoint.everySteps, min: 0)
        config.checkpoint.everyEpochs = try ck.int("every_epochs", default: config.checkpoint.everyEpochs, min: 0)
        config.checkpoint.keep = try ck.int("keep", default: config.checkpoint.keep, min: 1)
        try ck.finish()

        let out = try root.section("output")
        config.output.dir = try out.scalar("dir")
        try out.finish()
        try root.finish()

        if config.train.earlyStopping.patience > 0 && config.data.validationSplit == 0 {
            throw ConfigError("\(file): 'train.early_stopping' needs 'data.validation_split' > 0 (stopping on the test set would choose the model with it)")
        }
        if config.optimizer.shard == .on && config.train.bucketMB > 0 {
            throw ConfigError("\(file): 'optimizer.shard: true' and 'train.bucket_mb' > 0 cannot be combined (a sharded step reduce-scatters all gradients at once); set one of them off")
        }
        if config.train.globalBatch % config.train.accumulateSteps != 0 {
            throw ConfigError("\(file): 'train.global_batch' (\(config.train.globalBatch)) must be divisible by 'train.accumulate_steps' (\(config.train.accumulateSteps))")
        }
        return config
    }
}
