// `lockstep eval` and `lockstep inspect`: using a checkpoint.
import ArgumentParser
import Foundation
import Training

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Evaluate a checkpoint on the test split (exact under mpirun too).")
    @Option(name: .long, help: "The checkpoint (.safetensors).") var checkpoint: String
    @Option(name: .long, help: "A config to use instead of the one stored in the checkpoint.") var config: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key (repeatable).", valueName: "key=value"))
    var overrides: [String] = []
    @Option(help: "Simulate N ranks as threads.") var simulateRanks: Int?

    func validate() throws { try validateSimulatedRanks(simulateRanks) }

    func run() throws {
        let shared = SharedData()
        let (path, configPath, overrides) = (checkpoint, config, self.overrides)
        launch(simulateRanks: simulateRanks) { comm in
            let file = try SafeTensorsFile(bytes: try readOnRootAndBroadcast(path, communicator: comm), path: path)
            let config: TrainingConfig
            if let configPath {
                config = try TrainingConfig.load(path: configPath, overrides: overrides)
            } else {
                guard let yaml = file.metadata["config"] else { throw SafeTensorsError("\(path): no config in the checkpoint; pass --config") }
                config = try TrainingConfig.parse(yaml: yaml, file: "\(path) (stored config)", overrides: overrides)
            }
            let trainer = try Trainer(config: config, communicator: comm, data: try shared.get(config))
            try trainer.restore(file, path: path, resuming: false)
            let r = try trainer.evaluate()
            guard comm.rank == 0 else { return }
            print(r.report(title: "checkpoint \(path) (step \(file.metadata["step"] ?? "?")) on \(comm.size) rank(s)"))
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a checkpoint's metadata and a table of its tensors.")
    @Argument(help: "The checkpoint (.safetensors).") var path: String

    func run() throws {
        do {
            print(try SafeTensorsFile.read(path: path).inspection(path: path))
        } catch {
            printError("\(error)")
            Foundation.exit(1)
        }
    }
}
