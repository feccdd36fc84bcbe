// `lockstep train` and `lockstep compare-bn`: training from a config.
import ArgumentParser
import Collectives
import Configuration
import Formats
import Foundation
import Reports
import Studies
import Training

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model from a config.",
        discussion: "On SIGTERM or SIGINT every rank stops after the current step, rank 0 writes a checkpoint, and the job exits with status \(Preempted.exitCode); a second signal exits at once.")
    @OptionGroup var options: RunOptions

    @Option(name: .long, help: ArgumentHelp("Resume from a checkpoint: a path, or 'auto' for the newest checkpoint of the run directory (output.dir, or the newest runs/<name>-* with a checkpoint).", valueName: "auto|path"))
    var resume: String?

    @Flag(name: .long, help: "Start afresh in an output.dir that holds an earlier run, deleting that run's files.")
    var overwrite = false

    @Flag(name: .long, help: "Print the resolved config (after --set) and exit.")
    var printConfig = false

    @Flag(name: .long, help: ArgumentHelp("Print every trained parameter at the end (for tests).", visibility: .hidden))
    var dumpParameters = false

    func run() throws {
        if printConfig {
            let config = try options.loadConfig()
            print(config.resolvedYAML, terminator: "")
            // The memory estimate, as YAML comments (the data is read for its sizes).
            let ranks = options.simulateRanks ?? 1
            let estimate = try MemoryEstimate(config: config, data: try TrainingData.load(config), worldSize: ranks)
            print("# memory estimate for \(ranks) rank(s) (--simulate-ranks N for more):")
            print(estimate.table.split(separator: "\n").map { "#" + $0 }.joined(separator: "\n"))
            return
        }
        let shared = SharedData()
        let (options, dump, resume, overwrite) = (self.options, dumpParameters, self.resume, self.overwrite)
        StopSignal.install()
        launch(simulateRanks: options.simulateRanks) { comm in
            let config = try options.loadConfig()
            let data = try shared.get(config)
            let trainer = try Trainer(config: config, communicator: comm, data: data)
            try trainer.run(resume: resume, overwrite: overwrite)
            if config.data.format == .packed, let line = try data.packedReadReport(comm) { print(line) }
            if dump && comm.rank == 0 {
                print("parameters: " + trainer.model.parameters.flatValues.map { String(format: "%.9g", $0) }.joined(separator: " "))
            }
        }
    }
}

struct CompareBN: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare-bn",
        abstract: "Train a config with synchronized and with local batch norm in one launch, and compare them.",
        discussion: "Both runs start from the same weights, data order and randomness; only bn.mode differs. Runs go to <output.dir>/sync and <output.dir>/local, the comparison to <output.dir>/compare-bn/ (report.md, report.html, SVG plots).")
    @OptionGroup var options: RunOptions

    @Flag(name: .long, help: "Start afresh where <output.dir>/sync or /local holds an earlier run, deleting that run's files.")
    var overwrite = false
    @Option(help: "Study: run each variant with N seeds (seed, seed+1, ...) and report means with 95% intervals.")
    var seeds: Int?
    @Option(help: ArgumentHelp("Study: per-rank batch sizes to sweep (global batch = size × ranks).", valueName: "2,4,8"))
    var perRankBatch: String?
    @Option(help: ArgumentHelp("Study: also replace every batchnorm with these norms, which need no communication.", valueName: "groupnorm,layernorm"))
    var alternatives: String?
    @Option(help: "Study: groups of the groupnorm alternative.") var groups = 8
    @Option(help: "Study: override train.epochs for every run.") var epochs: Int?
    @Flag(name: .customLong("scale-lr"), help: "Study: scale optimizer.lr linearly with each run's global batch (relative to the config's train.global_batch).")
    var scaleLR = false

    var isStudy: Bool { seeds != nil || perRankBatch != nil || alternatives != nil || scaleLR }

    func validate() throws {
        if let seeds, seeds < 1 { throw ValidationError("--seeds: expected at least 1, got \(seeds)") }
        if let epochs, epochs < 1 { throw ValidationError("--epochs: expected at least 1, got \(epochs)") }
        if let perRankBatch, Self.integers(perRankBatch) == nil {
            throw ValidationError("--per-rank-batch: expected positive integers separated by commas, such as 2,4,8, got '\(perRankBatch)'")
        }
        if let alternatives, alternatives.split(separator: ",").isEmpty { throw ValidationError("--alternatives: empty list") }
    }

    static func integers(_ text: String) -> [Int]? {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return parts.map { $0! }
    }

    func run() throws {
        if isStudy { return try runStudy() }
        let shared = SharedData()
        let (options, overwrite) = (self.options, self.overwrite)
        StopSignal.install()
        launch(simulateRanks: options.simulateRanks) { comm in
            let base = try TrainingConfig.load(path: options.config, overrides: options.allOverrides)
            var root = base.output.dir ?? RunDirectory.defaultPath(name: base.name + "-compare-bn")
            root = String(decoding: try comm.broadcast(bytes: Array(root.utf8)), as: UTF8.self)
            var dirs: [String] = []
            for mode in ["sync", "local"] {
                let dir = (root as NSString).appendingPathComponent(mode)
                let config = try TrainingConfig.load(path: options.config, overrides: options.allOverrides + ["bn.mode=\(mode)", "output.dir=\(dir)"])
                let trainer = try Trainer(config: config, communicator: comm, data: try shared.get(config))
                try trainer.run(resume: nil, overwrite: overwrite)
                dirs.append(dir)
            }
            guard comm.rank == 0 else { return }
            let out = (root as NSString).appendingPathComponent("compare-bn")
            let report = Reports.Report(title: "\(base.name): synchronized vs local batch norm on \(comm.size) rank(s), global batch \(base.train.globalBatch)",
                                runs: try dirs.map { try RunMetrics.load($0) })
            try report.write(to: out)
            print(report.markdown)
            print("report: \(out)/report.html")
        }
    }
}

extension CompareBN {
    /// The study: variants × per-rank batches × seeds, then a summary with intervals.
    func runStudy() throws {
        let shared = SharedData()
        let options = self.options
        let extra = (epochs.map { ["train.epochs=\($0)"] } ?? [])
        let (seedCount, batchText, alternativesText, groups, scaleLR) = (seeds ?? 1, perRankBatch, alternatives, self.groups, self.scaleLR)
        StopSignal.install()
        launch(simulateRanks: options.simulateRanks) { comm in
            let overrides = options.allOverrides.filter { !$0.hasPrefix("bn.mode=") } + extra
            let base = try TrainingConfig.load(path: options.config, overrides: overrides)
            var root = base.output.dir ?? RunDirectory.defaultPath(name: base.name + "-compare-bn")
            root = String(decoding: try comm.broadcast(bytes: Array(root.utf8)), as: UTF8.self)
            let batches = try batchText.map { text -> [Int] in
                guard let list = CompareBN.integers(text) else { throw ConfigError("--per-rank-batch: expected positive integers") }
                return list
            } ?? [base.train.globalBatch / comm.size]
            guard batchText != nil || base.train.globalBatch % comm.size == 0 else {
                throw ConfigError("\(options.config): train.global_batch \(base.train.globalBatch) does not divide over \(comm.size) ranks; give --per-rank-batch")
            }
            let alternatives = alternativesText.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? []
            var study = try BNStudy(variants: ["sync", "local"] + alternatives, perRankBatches: batches,
                                    seeds: (0..<seedCount).map { base.train.seed + $0 }, groups: groups, root: root)
            study.scaleLearningRate = scaleLR
            let console = Console(isEnabled: comm.rank == 0)
            let outcomes = try study.execute(configPath: options.config, overrides: overrides, communicator: comm,
                                             data: { try shared.get($0) }, console: console)
            let names = try hostNames(comm)   // a collective: every rank takes part
            guard comm.rank == 0 else { return }
            let cores = ProcessInfo.processInfo.activeProcessorCount
            let kind = TimedCommunicator(comm).kind
            let hosts = describeHosts(names), separate = Set(names).count > 1
            let sharing = kind == "threads" ? "\(comm.size) simulated ranks (threads) sharing \(cores) core(s)"
                : separate ? "\(comm.size) \(kind) ranks on hosts \(hosts)"
                : comm.size > cores ? "\(comm.size) \(kind) ranks oversubscribing \(cores) core(s)" : "\(comm.size) \(kind) rank(s) on separate cores of \(hosts)"
            let summary = study.summary(outcomes, setting: "\(base.name), \(sharing), \(base.train.epochs) epochs" + (scaleLR ? ", lr \(base.optimizer.learningRate) × global batch / \(base.train.globalBatch)" : ""))
            let out = (root as NSString).appendingPathComponent("study")
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            try writeAtomically(Array(summary.markdown.utf8), to: (out as NSString).appendingPathComponent("summary.md"))
            try writeAtomically(Array(summary.chart.svg.utf8), to: (out as NSString).appendingPathComponent("accuracy.svg"))
            print(summary.markdown)
            print("study: \(out)/summary.md, \(out)/accuracy.svg")
        }
    }
}
