// The lockstep command line: the root command, the options every training command shares, and
// the data cache that simulated ranks share. Each subcommand lives in a file named for its
// family; starting ranks and exit statuses are Launch's (Launcher.run).
import ArgumentParser
import Collectives
import Configuration
import Foundation
import Launch
import MPICollectives
import Training

@main
struct Lockstep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockstep",
        abstract: "Data-parallel neural-network training on CPU clusters, over MPI.",
        subcommands: [Train.self, CompareBN.self, ReportCommand.self, Eval.self, Calibrate.self, Export.self, Predict.self, Inspect.self, Bench.self, BenchConv.self, CommBench.self, Ranks.self, Pack.self])
}

enum BNModeOption: String, ExpressibleByArgument, CaseIterable {
    case sync, local
}

/// --simulate-ranks N: at least 1, and not under mpirun/srun.
func validateSimulatedRanks(_ n: Int?) throws {
    if let n, n < 1 { throw ValidationError("--simulate-ranks must be at least 1, got \(n)") }
    if n != nil && MPICommunicator.launchedByMPI {
        throw ValidationError("--simulate-ranks cannot be combined with mpirun/srun")
    }
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

    func validate() throws { try validateSimulatedRanks(simulateRanks) }

    var allOverrides: [String] { overrides + (bn.map { ["bn.mode=\($0.rawValue)"] } ?? []) }

    func loadConfig(_ extra: [String] = []) throws -> TrainingConfig {
        try TrainingConfig.load(path: config, overrides: allOverrides + extra)
    }
}

/// Runs `body` once per rank (Launcher.run) and exits with the job's status.
func launch(simulateRanks: Int?, _ body: @escaping (Communicator) throws -> Void) -> Never {
    Foundation.exit(Launcher.run(simulateRanks: simulateRanks, body))
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
