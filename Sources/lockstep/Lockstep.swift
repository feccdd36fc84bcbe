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
        subcommands: [Train.self, Bench.self, Ranks.self])
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
        } catch {
            printError("rank \(comm.rank): \(error)")
            comm.abort("\(error)")
        }
        comm.finalize()
        Foundation.exit(0)
    }
    let n = simulateRanks ?? 1
    if n == 1 && simulateRanks == nil {
        do { try body(SingleProcessCommunicator()) } catch {
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
            do { try body(comm) } catch let e as RankError { throw e } catch let e as CollectiveError { throw e } catch {
                throw RankError(rank: comm.rank, underlying: error)
            }
        }
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
    static let configuration = CommandConfiguration(abstract: "Train a model from a config.")
    @OptionGroup var options: RunOptions

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
        let (options, dump) = (self.options, dumpParameters)
        withCommunicators(simulateRanks: options.simulateRanks) { comm in
            let config = try TrainingConfig.load(path: options.config, overrides: options.allOverrides)
            let data = try shared.get(config)
            let trainer = try Trainer(config: config, communicator: comm, data: data)
            if comm.rank == 0 { print(trainer.model.summary) }
            try trainer.run()
            if dump && comm.rank == 0 {
                print("parameters: " + trainer.model.parameters.flatValues.map { String(format: "%.9g", $0) }.joined(separator: " "))
            }
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
            print("bench \(config.name): \(comm.size) rank(s) [\(comm.kind)] × \(blasThreadCount()) BLAS thread(s), global batch \(config.train.globalBatch), bn \(config.bn.mode.rawValue)")
            print("OpenBLAS: \(blasConfiguration())")
            print(String(format: "samples/s: median %.1f  (runs: %@)", r.median, r.runs.map { String(format: "%.1f", $0) }.joined(separator: ", ")))
            print(String(format: "per step (profiled run): %.2f ms; gradient all-reduce %.3f ms; all collectives %.3f ms (SyncBN and others %.3f ms)",
                         1000 * r.stepSeconds, 1000 * r.gradientAllReduceSeconds, 1000 * r.collectiveSeconds,
                         1000 * (r.collectiveSeconds - r.gradientAllReduceSeconds)))
            print("layer                 forward ms  backward ms   share")
            let layerTotal = r.forwardSeconds.reduce(0, +) + r.backwardSeconds.reduce(0, +)
            for i in 0..<r.layerNames.count {
                let share = (r.forwardSeconds[i] + r.backwardSeconds[i]) / r.stepSeconds
                print(String(format: "%-20@ %11.3f %12.3f %6.1f%%", r.layerNames[i] as NSString, 1000 * r.forwardSeconds[i], 1000 * r.backwardSeconds[i], 100 * share))
            }
            let other = r.stepSeconds - layerTotal
            print(String(format: "%-20@ %24.3f %6.1f%%", "other (data, loss, optimizer, all-reduce)" as NSString, 1000 * other, 100 * other / r.stepSeconds))
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
