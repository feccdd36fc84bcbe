// `lockstep bench`, `lockstep ranks` and `lockstep report`: measuring and looking at runs.
import ArgumentParser
import Benchmarks
import Collectives
import Configuration
import Foundation
import Reports
import TensorCore
import Training

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure training throughput and where the time goes.")
    @OptionGroup var options: RunOptions
    @Option(help: "Timed steps per run.") var steps = 200
    @Option(help: "Warm-up steps before timing.") var warmup = 20
    @Option(help: "Timed runs (the median is reported).") var runs = 5
    @Option(help: "Also write the figures as JSON to this file (for scripts such as bench/cost-model).") var json: String?
    @Option(help: ArgumentHelp("Compare against a second trainer with this override (repeatable): both in this process, timed in alternating blocks of --steps.", valueName: "key=value"))
    var against: [String] = []
    @Option(help: "Pairs of alternating blocks with --against.") var pairs = 5
    @Option(help: ArgumentHelp("With --against: also time every step on its own and write one row per step to PREFIX.rankN.tsv on each rank (wall, collective, thread and process CPU seconds).", valueName: "prefix"))
    var stepTrace: String?

    func validate() throws {
        for a in against where a.split(separator: "=").first.map({ $0 == "data" || $0.hasPrefix("data.") }) ?? false {
            throw ValidationError("--against \(a): both trainers share the data loaded once; time data settings in separate runs")
        }
        if stepTrace != nil && against.isEmpty { throw ValidationError("--step-trace traces the blocks of --against; give --against KEY=VALUE") }
    }

    func run() throws {
        let shared = SharedData()
        let (options, steps, warmup, runs, json) = (self.options, self.steps, self.warmup, self.runs, self.json)
        let (against, pairs, stepTrace) = (self.against, self.pairs, self.stepTrace)
        launch(simulateRanks: options.simulateRanks) { comm in
            let config = try options.loadConfig()
            let trainer = try Trainer(config: config, communicator: comm, data: try shared.get(config))
            if !against.isEmpty {
                let other = try Trainer(config: try options.loadConfig(against), communicator: comm, data: try shared.get(config))
                // A trainer that checkpoints (checkpoint.every_steps > 0) writes into a scratch run
                // directory of its own, removed afterwards.
                let scratch = comm.rank == 0 ? NSTemporaryDirectory() + "lockstep-bench-\(getpid())" : nil
                defer { if let scratch { try? FileManager.default.removeItem(atPath: scratch) } }
                func directory(_ t: Trainer, _ name: String) throws -> RunDirectory? {
                    guard t.config.checkpoint.everySteps > 0 else { return nil }
                    return try RunDirectory(path: (scratch ?? "") + "/" + name, isEnabled: comm.rank == 0, resolvedConfig: t.config.resolvedYAML)
                }
                let r = try interleavedBenchmark(trainer, other, steps: steps, warmup: warmup, pairs: pairs,
                                                 directories: (try directory(trainer, "a"), try directory(other, "b")),
                                                 traceSteps: stepTrace != nil)
                if let stepTrace {
                    let path = "\(stepTrace).rank\(comm.rank).tsv"
                    let text = ([StepTrace.header] + r.trace.map(\.line)).joined(separator: "\n") + "\n"
                    do { try text.write(toFile: path, atomically: true, encoding: .utf8) } catch {
                        throw BenchmarkError("--step-trace: cannot write \(path) (\(error.localizedDescription))")
                    }
                }
                guard comm.rank == 0 else { return }
                print("bench \(config.name): \(comm.size) rank(s) [\(comm.kind)] × \(blasThreadCount()) BLAS thread(s), global batch \(config.train.globalBatch), \(steps) steps per block\nOpenBLAS: \(blasConfiguration())\nCKernels: \(kernelLevelName())")
                func mode(_ c: TrainingConfig) -> String {
                    (c.train.exactChunk.map { "exact mode (chunks of \($0))" } ?? "float sums")
                        + (c.checkpoint.everySteps > 0 ? ", a checkpoint every \(c.checkpoint.everySteps) steps" : "")
                }
                print("A: the config as given, \(mode(config)); B: with \(against.joined(separator: " ")), \(mode(other.config))")
                print(r.report(a: "A samples/s", b: "B samples/s"))
                if let json {
                    try writeJSON(["config": config.name, "ranks": comm.size, "against": against, "a": r.pairs.map { $0.a },
                                   "b": r.pairs.map { $0.b }, "median_ratio": r.medianRatio, "openblas": blasConfiguration()], to: json)
                }
                return
            }
            let r = try trainer.benchmark(steps: steps, warmup: warmup, runs: runs)
            guard comm.rank == 0 else { return }
            let mode = config.train.exactChunk.map { "exact mode (chunks of \($0))" } ?? "float sums (train.exact: false)"
            print(r.report(header: "bench \(config.name): \(comm.size) rank(s) [\(comm.kind)] × \(blasThreadCount()) BLAS thread(s), global batch \(config.train.globalBatch), bn \(config.bn.mode.rawValue), \(mode)\nOpenBLAS: \(blasConfiguration())\nCKernels: \(kernelLevelName())"))
            if let json {
                let figures: [String: Any] = [
                    "config": config.name, "ranks": comm.size, "communicator": comm.kind, "blas_threads": blasThreadCount(),
                    "global_batch": config.train.globalBatch, "exact": config.train.exactChunk != nil, "samples_per_second": r.median,
                    "step_seconds": r.stepSeconds, "collective_seconds": r.collectiveSeconds,
                    "gradient_allreduce_seconds": r.gradientAllReduceSeconds, "skew_wait_seconds": r.skewWaitSeconds,
                    "allreduces_per_step": r.allReducesPerStep, "allreduce_bytes_per_step": r.allReduceBytesPerStep,
                    "gradient_bytes": r.gradientBytes, "openblas": blasConfiguration()]
                try writeJSON(figures, to: json)
            }
        }
    }
}

struct Ranks: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ranks", abstract: "Print the rank and size this process sees (launcher check).")
    @Option(help: "Simulate N ranks as threads.") var simulateRanks: Int?
    func validate() throws { try validateSimulatedRanks(simulateRanks) }
    func run() throws {
        launch(simulateRanks: simulateRanks) { comm in
            var v = [Double(comm.rank)]
            try comm.allReduce(&v)
            print("rank \(comm.rank) of \(comm.size) [\(comm.kind)] on \(hostName()) sum of ranks \(Int(v[0]))")
        }
    }
}

/// This host's name as gethostname(2) reports it (no DNS lookup, unlike ProcessInfo.hostName).
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report", abstract: "Plots and a table for finished or running runs, from their metrics.jsonl.")
    @Argument(help: "Run directories.") var runs: [String]
    @Option(help: "Where to write report.md, report.html and the SVG plots.") var out = "report"
    @Option(help: "The report's title.") var title = "Lockstep runs"

    func run() throws {
        do {
            let metrics = try runs.map { try RunMetrics.load($0) }
            for w in metrics.flatMap({ $0.warnings }) { printError("warning: \(w)") }
            let report = Reports.Report(title: title, runs: metrics)
            try report.write(to: out)
            print(report.markdown)
            print("report: \(out)/report.html")
        } catch {
            printError("\(error)")
            Foundation.exit(1)
        }
    }
}
