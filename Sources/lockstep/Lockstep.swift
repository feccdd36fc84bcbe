// The lockstep command line.
import ArgumentParser
import Collectives
import Foundation
import MPICollectives
import NN
import TensorCore
import Training

@main
struct Lockstep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockstep",
        abstract: "Data-parallel neural-network training on CPU clusters, over MPI.",
        subcommands: [Train.self, CompareBN.self, ReportCommand.self, Eval.self, Inspect.self, Bench.self, Ranks.self])
}

enum BNModeOption: String, ExpressibleByArgument, CaseIterable {
    case sync, local
}

struct RunOptions: ParsableArguments {
    @Option(name: .long, help: "The training config (YAML).")
    var config: String

    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key by its dotted path, e.g. --set train.epochs=3 (repeatable).", valueName: "key=value"))
    var overrides: [String] = []

    @Option(name: .long, help: "Batch-norm statistics: sync (over the global batch) or local (per rank). Overrides bn.mode.")
    var bn: BNModeOption?

    @Option(name: .long, help: "Simulate N ranks as threads in this process (no MPI needed).")
    var simulateRanks: Int?

    func validate() throws {
        if let n = simulateRanks, n < 1 { throw ValidationError("--simulate-ranks must be at least 1") }
        if simulateRanks != nil && MPICommunicator.launchedByMPI {
            throw ValidationError("--simulate-ranks cannot be combined with mpirun/srun")
        }
    }

    var allOverrides: [String] { overrides + (bn.map { ["bn.mode=\($0.rawValue)"] } ?? []) }
}

/// Runs `body` once per rank with the right communicator: MPI under mpirun/srun, threads with
/// --simulate-ranks, a single process otherwise. Any rank's error prints `rank R: message` and
/// ends the whole job with exit status 1.
func withCommunicators(simulateRanks: Int?, _ body: @escaping (Communicator) throws -> Void) -> Never {
    if MPICommunicator.launchedByMPI {
        let comm = MPICommunicator()
        do {
            try body(comm)
        } catch let p as Preempted {
            _ = p
            comm.finalize()
            Foundation.exit(Preempted.exitCode)
        } catch {
            printError("rank \(comm.rank): \(error)")
            comm.abort("\(error)")
        }
        comm.finalize()
        Foundation.exit(0)
    }
    let n = simulateRanks ?? 1
    if n == 1 && simulateRanks == nil {
        do { try body(SingleProcessCommunicator()) } catch is Preempted {
            Foundation.exit(Preempted.exitCode)
        } catch {
            printError("rank 0: \(error)")
            Foundation.exit(1)
        }
        Foundation.exit(0)
    }
    if ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] == nil {
        setBLASThreadCount(max(1, ProcessInfo.processInfo.activeProcessorCount / n))
    }
    do {
        _ = try ThreadCommunicator.run(size: n) { comm in
            do { try body(comm) } catch let e as RankError { throw e } catch let e as CollectiveError { throw e } catch let e as Preempted { throw e } catch {
                throw RankError(rank: comm.rank, underlying: error)
            }
        }
    } catch is Preempted {
        Foundation.exit(Preempted.exitCode)
    } catch {
        printError(error is RankError ? "\(error)" : "rank ?: \(error)")
        Foundation.exit(1)
    }
    Foundation.exit(0)
}

struct RankError: Error, CustomStringConvertible {
    let rank: Int
    let underlying: Error
    var description: String { "rank \(rank): \(underlying)" }
}

/// Loads the data once per process (shared by simulated ranks).
final class SharedData: @unchecked Sendable {
    private let lock = NSLock()
    private var cached: Result<TrainingData, Error>?
    func get(_ config: TrainingConfig) throws -> TrainingData {
        lock.lock(); defer { lock.unlock() }
        if cached == nil { cached = Result { try TrainingData.load(config) } }
        return try cached!.get()
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model from a config.",
        discussion: "On SIGTERM or SIGINT every rank stops after the current step, rank 0 writes a checkpoint, and the job exits with status \(Preempted.exitCode); a second signal exits at once.")
    @OptionGroup var options: RunOptions

    @Option(name: .long, help: ArgumentHelp("Resume from a checkpoint: a path, or 'auto' for the newest checkpoint of the run directory (output.dir, or the newest runs/<name>-* with a checkpoint).", valueName: "auto|path"))
    var resume: String?

    @Flag(name: .long, help: "Print the resolved config (after --set) and exit.")
    var printConfig = false

    @Flag(name: .long, help: ArgumentHelp("Print every trained parameter at the end (for tests).", visibility: .hidden))
    var dumpParameters = false

    func run() throws {
        if printConfig {
            let config = try TrainingConfig.load(path: options.config, overrides: options.allOverrides)
            print(config.resolvedYAML, terminator: "")
            return
        }
        let shared = SharedData()
        let (options, dump, resume) = (self.options, dumpParameters, self.resume)
        StopSignal.install()
        withCommunicators(simulateRanks: options.simulateRanks) { comm in
            let config = try TrainingConfig.load(path: options.config, overrides: options.allOverrides)
            let data = try shared.get(config)
            let trainer = try Trainer(config: config, communicator: comm, data: data)
            // Rank 0 decides the run directory and the checkpoint to resume from.
            var directory = config.output.dir ?? RunDirectory.defaultPath(name: config.name)
            var checkpoint = ""
            if comm.rank == 0, let resume {
                if resume == "auto" {
                    if config.output.dir == nil, let previous = RunDirectory.newestRun(name: config.name) { directory = previous }
                    checkpoint = Checkpointer.newest(in: directory) ?? ""
                    if checkpoint.isEmpty { print("lockstep: --resume auto found no checkpoint in \(directory); starting from scratch") }
                } else {
                    checkpoint = resume
                    if config.output.dir == nil { directory = (resume as NSString).deletingLastPathComponent }
                }
            }
            checkpoint = String(decoding: try comm.broadcast(bytes: Array(checkpoint.utf8)), as: UTF8.self)
            var sums: [Double]? = nil
            if !checkpoint.isEmpty {
                sums = try trainer.restore(from: checkpoint)
                if comm.rank == 0 { print("lockstep: resumed from \(checkpoint) at step \(trainer.step)") }
            }
            let run = try RunDirectory(path: directory, isEnabled: comm.rank == 0, resolvedConfig: config.resolvedYAML)
            if comm.rank == 0 { print(trainer.model.summary); print("run directory: \(directory)") }
            try trainer.run(directory: run, epochSums: sums)
            if dump && comm.rank == 0 {
                print("parameters: " + trainer.model.parameters.flatValues.map { String(format: "%.9g", $0) }.joined(separator: " "))
            }
        }
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Evaluate a checkpoint on the test split (exact under mpirun too).")
    @Option(name: .long, help: "The checkpoint (.safetensors).") var checkpoint: String
    @Option(name: .long, help: "A config to use instead of the one stored in the checkpoint.") var config: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key (repeatable).", valueName: "key=value"))
    var overrides: [String] = []
    @Option(help: "Simulate N ranks as threads.") var simulateRanks: Int?

    func run() throws {
        let shared = SharedData()
        let (path, configPath, overrides) = (checkpoint, config, self.overrides)
        withCommunicators(simulateRanks: simulateRanks) { comm in
            let file = try SafeTensorsFile(bytes: try readOnRootAndBroadcast(path, communicator: comm), path: path)
            let config: TrainingConfig
            if let configPath {
                config = try TrainingConfig.load(path: configPath, overrides: overrides)
            } else {
                guard let yaml = file.metadata["config"] else { throw SafeTensorsError("\(path): no config in the checkpoint; pass --config") }
                config = try TrainingConfig.parse(yaml: yaml, file: "\(path) (stored config)", overrides: overrides)
            }
            let trainer = try Trainer(config: config, communicator: comm, data: try shared.get(config))
            try trainer.restore(file, path: path)
            let r = try trainer.evaluate()
            guard comm.rank == 0 else { return }
            print("checkpoint \(path) (step \(file.metadata["step"] ?? "?")) on \(comm.size) rank(s)")
            print(String(format: "test loss %.4f  accuracy %.2f%%  samples %d  ece %.4f  %@", r.loss, 100 * r.accuracy, r.count,
                         r.expectedCalibrationError, (r.overconfidence >= 0 ? "over-confident by \(String(format: "%.3f", r.overconfidence))" : "under-confident by \(String(format: "%.3f", -r.overconfidence))") as NSString))
            print("class  correct/total  accuracy")
            for k in 0..<r.perClassCount.count {
                let acc = r.perClassCount[k] > 0 ? 100 * Double(r.perClassCorrect[k]) / Double(r.perClassCount[k]) : 0
                print(String(format: "%5d  %7d/%-5d  %6.2f%%", k, r.perClassCorrect[k], r.perClassCount[k], acc))
            }
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a checkpoint's metadata and a table of its tensors.")
    @Argument(help: "The checkpoint (.safetensors).") var path: String

    func run() throws {
        do {
            let file = try SafeTensorsFile.read(path: path)
            print("checkpoint \(path)")
            for key in file.metadata.keys.sorted() where key != "config" {
                print("  \(key): \(file.metadata[key]!)")
            }
            if let c = file.metadata["config"] { print("  config: \(c.split(separator: "\n").count) lines (lockstep eval uses it)") }
            func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
            print(pad("tensor", 48) + pad("shape", 16) + String(format: "%10@ %14@ %14@", "count" as NSString, "mean" as NSString, "std" as NSString))
            for e in file.entries.sorted(by: { $0.name < $1.name }) {
                let v = file.values(e)
                let mean = v.reduce(0.0) { $0 + Double($1) } / Double(max(v.count, 1))
                let variance = v.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(max(v.count, 1))
                print(pad(e.name, 48) + pad("\(e.shape)", 16) + String(format: "%10d %14.6g %14.6g", v.count, mean, variance.squareRoot()))
            }
        } catch {
            printError("\(error)")
            Foundation.exit(1)
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure training throughput and where the time goes.")
    @OptionGroup var options: RunOptions
    @Option(help: "Timed steps per run.") var steps = 200
    @Option(help: "Warm-up steps before timing.") var warmup = 20
    @Option(help: "Timed runs (the median is reported).") var runs = 5

    func run() throws {
        let shared = SharedData()
        let (options, steps, warmup, runs) = (self.options, self.steps, self.warmup, self.runs)
        withCommunicators(simulateRanks: options.simulateRanks) { comm in
            let config = try TrainingConfig.load(path: options.config, overrides: options.allOverrides)
            let data = try shared.get(config)
            let trainer = try Trainer(config: config, communicator: comm, data: data)
            let r = try trainer.benchmark(steps: steps, warmup: warmup, runs: runs)
            guard comm.rank == 0 else { return }
            print("bench \(config.name): \(comm.size) rank(s) [\(comm.kind)] × \(blasThreadCount()) BLAS thread(s), global batch \(config.train.globalBatch), bn \(config.bn.mode.rawValue), " + (config.train.exact ? "exact mode (chunks of \(config.train.chunk))" : "fast path (train.exact: false)"))
            print("OpenBLAS: \(blasConfiguration())")
            print(String(format: "samples/s: median %.1f  (runs: %@)", r.median, r.runs.map { String(format: "%.1f", $0) }.joined(separator: ", ")))
            print(String(format: "per step (profiled run): %.2f ms; gradient all-reduce %.3f ms; all collectives %.3f ms (SyncBN and others %.3f ms)",
                         1000 * r.stepSeconds, 1000 * r.gradientAllReduceSeconds, 1000 * r.collectiveSeconds,
                         1000 * (r.collectiveSeconds - r.gradientAllReduceSeconds)))
            if comm.size > 1 {
                print(String(format: "gradient all-reduce of %.2f MB: median %.3f ms in training, bare all-reduce of the same size %.3f ms (ratio %.2f); waiting for the slowest rank before it %.3f ms/step",
                             Double(r.gradientBytes) / 1e6, 1000 * r.gradientAllReduceMedian, 1000 * r.bareAllReduceMedian,
                             r.gradientAllReduceMedian / max(r.bareAllReduceMedian, 1e-12), 1000 * r.skewWaitSeconds))
            }
            print("layer                 forward ms  backward ms   share")
            let layerTotal = r.forwardSeconds.reduce(0, +) + r.backwardSeconds.reduce(0, +)
            for i in 0..<r.layerNames.count {
                let share = (r.forwardSeconds[i] + r.backwardSeconds[i]) / r.stepSeconds
                let name = r.layerNames[i].padding(toLength: 20, withPad: " ", startingAt: 0)
                print(name + String(format: " %11.3f %12.3f %6.1f%%", 1000 * r.forwardSeconds[i], 1000 * r.backwardSeconds[i], 100 * share))
            }
            for (name, t) in [("data (batch + augmentation)", r.dataSeconds), ("loss", r.lossSeconds),
                              ("optimizer (+ zeroing grads)", r.optimizerSeconds), ("gradient all-reduce", r.gradientAllReduceSeconds),
                              ("exact sums (scales, quantise)", r.exactSumSeconds)] {
                print(name.padding(toLength: 33, withPad: " ", startingAt: 0) + String(format: " %11.3f ms      %6.1f%%", 1000 * t, 100 * t / r.stepSeconds))
            }
            let other = r.stepSeconds - layerTotal - r.dataSeconds - r.lossSeconds - r.optimizerSeconds - r.gradientAllReduceSeconds - r.exactSumSeconds
            print("other".padding(toLength: 33, withPad: " ", startingAt: 0) + String(format: " %11.3f ms      %6.1f%%", 1000 * other, 100 * other / r.stepSeconds))
        }
    }
}

struct Ranks: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ranks", abstract: "Print the rank and size this process sees (launcher check).")
    @Option(help: "Simulate N ranks as threads.") var simulateRanks: Int?
    func run() throws {
        withCommunicators(simulateRanks: simulateRanks) { comm in
            var v = [Double(comm.rank)]
            try comm.allReduce(&v)
            print("rank \(comm.rank) of \(comm.size) [\(comm.kind)] sum of ranks \(Int(v[0]))")
        }
    }
}

struct CompareBN: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare-bn",
        abstract: "Train a config with synchronized and with local batch norm in one launch, and compare them.",
        discussion: "Both runs start from the same weights, data order and randomness; only bn.mode differs. Runs go to <output.dir>/sync and <output.dir>/local, the comparison to <output.dir>/compare-bn/ (report.md, report.html, SVG plots).")
    @OptionGroup var options: RunOptions

    func run() throws {
        let shared = SharedData()
        let options = self.options
        StopSignal.install()
        withCommunicators(simulateRanks: options.simulateRanks) { comm in
            let base = try TrainingConfig.load(path: options.config, overrides: options.allOverrides)
            var root = base.output.dir ?? RunDirectory.defaultPath(name: base.name + "-compare-bn")
            root = String(decoding: try comm.broadcast(bytes: Array(root.utf8)), as: UTF8.self)
            var dirs: [String] = []
            for mode in ["sync", "local"] {
                let dir = (root as NSString).appendingPathComponent(mode)
                let config = try TrainingConfig.load(path: options.config, overrides: options.allOverrides + ["bn.mode=\(mode)", "output.dir=\(dir)"])
                let trainer = try Trainer(config: config, communicator: comm, data: try shared.get(config))
                let run = try RunDirectory(path: dir, isEnabled: comm.rank == 0, resolvedConfig: config.resolvedYAML)
                try trainer.run(directory: run)
                dirs.append(dir)
            }
            guard comm.rank == 0 else { return }
            let out = (root as NSString).appendingPathComponent("compare-bn")
            let report = Training.Report(title: "\(base.name): synchronized vs local batch norm on \(comm.size) rank(s), global batch \(base.train.globalBatch)",
                                runs: try dirs.map { try RunMetrics.load($0) })
            try report.write(to: out)
            print(report.markdown)
            print("report: \(out)/report.html")
        }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report", abstract: "Plots and a table for finished or running runs, from their metrics.jsonl.")
    @Argument(help: "Run directories.") var runs: [String]
    @Option(help: "Where to write report.md, report.html and the SVG plots.") var out = "report"
    @Option(help: "The report's title.") var title = "Lockstep runs"

    func run() throws {
        do {
            let metrics = try runs.map { try RunMetrics.load($0) }
            for w in metrics.flatMap({ $0.warnings }) { printError("warning: \(w)") }
            let report = Training.Report(title: title, runs: metrics)
            try report.write(to: out)
            print(report.markdown)
            print("report: \(out)/report.html")
        } catch {
            printError("\(error)")
            Foundation.exit(1)
        }
    }
}
