// compare-bn as a study: batch-norm variants (sync, local, and norms that need no communication)
// × per-rank batch sizes × seeds, each a normal run under <root>/<variant>/b<per-rank>/seed-<s>.
// A run whose metrics already hold every epoch is reused, so an interrupted study resumes.
import Collectives
import Configuration
import Formats
import Foundation
import Training
import NN
import Reports
import TensorCore

public struct BNStudy {
    public var variants: [String]         // sync, local, groupnorm, layernorm
    public var perRankBatches: [Int]
    public var seeds: [Int]
    public var groups: Int
    public var root: String
    /// Scale optimizer.lr linearly with the global batch, from the config's own global batch
    /// (Goyal et al. 2017), so small and large per-rank batches train comparably in few epochs.
    public var scaleLearningRate = false

    public static let knownVariants = ["sync", "local", "groupnorm", "layernorm"]

    public struct Run: Sendable, Equatable {
        public var variant: String, perRankBatch: Int, seed: Int, directory: String
    }

    /// Checks the arguments; errors are one line naming the option.
    public init(variants: [String], perRankBatches: [Int], seeds: [Int], groups: Int, root: String) throws {
        guard !variants.isEmpty else { throw ConfigError("compare-bn: no batch-norm variants to compare") }
        if let bad = variants.first(where: { !Self.knownVariants.contains($0) }) {
            throw ConfigError("--alternatives: unknown alternative '\(bad)' (known: groupnorm, layernorm)")
        }
        guard !perRankBatches.isEmpty, perRankBatches.allSatisfy({ $0 > 0 }) else {
            throw ConfigError("--per-rank-batch: expected a non-empty list of positive sizes such as 2,4,8")
        }
        guard !seeds.isEmpty else { throw ConfigError("--seeds: expected at least 1") }
        guard groups >= 1 else { throw ConfigError("--groups: expected at least 1") }
        self.variants = variants
        self.perRankBatches = perRankBatches
        self.seeds = seeds
        self.groups = groups
        self.root = root
    }

    public var runs: [Run] {
        perRankBatches.flatMap { b in seeds.flatMap { s in variants.map { v in
            Run(variant: v, perRankBatch: b, seed: s, directory: "\(root)/\(v)/b\(b)/seed-\(s)")
        } } }
    }

    /// The config of one run: the base config with its seed, global batch (per-rank × ranks),
    /// output directory, and either bn.mode or every batch-norm layer replaced by the variant.
    public func config(for run: Run, base: TrainingConfig, ranks: Int, overrides: [String], path: String) throws -> TrainingConfig {
        // Full batches only (drop_last): a partial last batch would leave some ranks fewer samples
        // than the per-rank batch the run stands for (or none).
        var sets = overrides + ["train.seed=\(run.seed)", "train.global_batch=\(run.perRankBatch * ranks)", "output.dir=\(run.directory)",
                                "data.drop_last=true"]
        if run.variant == "sync" || run.variant == "local" { sets.append("bn.mode=\(run.variant)") }
        if scaleLearningRate {
            sets.append("optimizer.lr=\(base.optimizer.learningRate * Double(run.perRankBatch * ranks) / Double(base.train.globalBatch))")
        }
        // Exact mode hands out whole chunks: a chunk larger than the per-rank batch would leave
        // ranks without samples (and local BN without statistics), so the chunk must divide it.
        if let chunk = base.train.exactChunk, run.perRankBatch % chunk != 0 {
            sets.append("train.chunk=\(Self.gcd(run.perRankBatch, base.train.chunk))")
        }
        var config = try TrainingConfig.load(path: path, overrides: sets)
        if run.variant == "groupnorm" || run.variant == "layernorm" {
            config.model = Self.replacingBatchNorm(config.model, with: run.variant, groups: groups)
        }
        return config
    }

    static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

    /// Every `batchnorm` layer (also inside residual blocks) as group norm with `groups` groups
    /// or as layer norm (one group).
    public static func replacingBatchNorm(_ specs: [LayerSpec], with variant: String, groups: Int) -> [LayerSpec] {
        specs.map { spec in
            switch spec {
            case let .batchNorm(_, epsilon):
                return variant == "layernorm" ? .groupNorm(groups: 1, epsilon: epsilon, kind: "layernorm")
                                              : .groupNorm(groups: groups, epsilon: epsilon, kind: "groupnorm")
            case let .residual(layers, projection):
                return .residual(layers: replacingBatchNorm(layers, with: variant, groups: groups), projection: projection)
            default: return spec
            }
        }
    }

    /// True when `directory` holds a finished run of `epochs` epochs (or one early stopping ended).
    public static func isFinished(_ directory: String, epochs: Int) -> Bool {
        guard let m = try? RunMetrics.load(directory) else { return false }
        return m.epochs.count >= epochs
    }

    /// Final test accuracy, seconds per step and communication seconds per step of each run.
    public struct Outcome: Sendable {
        public var run: Run
        public var accuracy: Double, secondsPerStep: Double, communicationPerStep: Double
    }

    public func outcomes() throws -> [Outcome] {
        try runs.map { r in
            let m = try RunMetrics.load(r.directory)
            guard let last = m.epochs.last else { throw MetricsError("\(r.directory): no finished epoch") }
            return Outcome(run: r, accuracy: last.testAccuracy, secondsPerStep: last.secondsPerStep,
                           communicationPerStep: last.communicationSecondsPerStep)
        }
    }
}

extension BNStudy {
    /// Runs every run not finished yet (all ranks together), printing a progress line with an
    /// estimate of the time left after each; returns the outcomes of all runs.
    public func execute(configPath: String, overrides: [String], communicator: Communicator,
                        data: (TrainingConfig) throws -> TrainingData, console: Console) throws -> [Outcome] {
        let base = try TrainingConfig.load(path: configPath, overrides: overrides)
        let all = runs
        var finished = [Bool]()
        for r in all {
            let done = communicator.rank == 0 && Self.isFinished(r.directory, epochs: base.train.epochs)
            finished.append(try communicator.broadcast(bytes: [done ? 1 : 0]) == [1])
        }
        let toRun = all.indices.filter { !finished[$0] }
        console.line("compare-bn: \(all.count) runs (\(variants.joined(separator: ", ")) × per-rank batch \(perRankBatches.map(String.init).joined(separator: ", ")) × \(seeds.count) seed(s)), \(all.count - toRun.count) already finished and reused, \(toRun.count) to train")
        if let first = toRun.first {
            let estimate = try estimateSeconds(toRun.map { all[$0] }, probe: all[first], base: base, configPath: configPath,
                                               overrides: overrides, communicator: communicator, data: data)
            let text = estimate < 120 ? String(format: "%.0f s", estimate) : String(format: "%.0f min", estimate / 60)
            console.line("compare-bn: estimated wall time about \(text) (5 timed steps of the first run, scaled by each run's steps and batch; evaluation not included)")
        }
        let start = monotonicSeconds()
        for (n, i) in toRun.enumerated() {
            let r = all[i]
            let config = try config(for: r, base: base, ranks: communicator.size, overrides: overrides, path: configPath)
            let trainer = try Trainer(config: config, communicator: communicator, data: try data(config),
                                      console: Console(isEnabled: false))
            _ = try trainer.run(resume: nil, overwrite: true)
            let elapsed = monotonicSeconds() - start
            let left = elapsed / Double(n + 1) * Double(toRun.count - n - 1)
            let acc = trainer.history.last.map { String(format: "%.2f%%", 100 * $0.testAccuracy) } ?? "–"
            console.line(String(format: "compare-bn: %d/%d done: %@ per-rank batch %d seed %d: test accuracy %@ (%.0f s so far, about %.0f s left)",
                                n + 1, toRun.count, r.variant as NSString, r.perRankBatch, r.seed, acc as NSString, elapsed, left))
        }
        return try outcomes()
    }
}

extension BNStudy {
    /// Times 5 steps (after 2 of warm-up) of `probe`'s config and scales the time per sample to
    /// every pending run's steps and global batch. Every rank takes part (steps hold collectives).
    func estimateSeconds(_ pending: [Run], probe: Run, base: TrainingConfig, configPath: String, overrides: [String],
                         communicator: Communicator, data: (TrainingConfig) throws -> TrainingData) throws -> Double {
        let config = try config(for: probe, base: base, ranks: communicator.size, overrides: overrides, path: configPath)
        let trainer = try Trainer(config: config, communicator: communicator, data: try data(config), console: Console(isEnabled: false))
        let order = trainer.sampler.permutation(epoch: 0)
        let steps = trainer.sampler.stepsPerEpoch
        for i in 0..<2 { _ = try trainer.trainStep(epoch: 0, stepInEpoch: i % steps, order: order) }
        let t0 = monotonicSeconds()
        for i in 2..<7 { _ = try trainer.trainStep(epoch: 0, stepInEpoch: i % steps, order: order) }
        let perSample = (monotonicSeconds() - t0) / 5 / Double(config.train.globalBatch)
        var seconds = 0.0
        for r in pending {
            let c = try self.config(for: r, base: base, ranks: communicator.size, overrides: overrides, path: configPath)
            let perEpoch = c.data.dropLast ? trainer.sampler.datasetSize / c.train.globalBatch * c.train.globalBatch : trainer.sampler.datasetSize
            let samples = c.train.maxSteps > 0 ? min(c.train.maxSteps * c.train.globalBatch, c.train.epochs * perEpoch) : c.train.epochs * perEpoch
            seconds += perSample * Double(samples)
        }
        return seconds
    }
}
