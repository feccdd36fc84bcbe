// `lockstep eval`, `lockstep calibrate` and `lockstep inspect`: using a checkpoint.
import ArgumentParser
import Collectives
import Configuration
import Formats
import Foundation
import Reports
import Training

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Evaluate a checkpoint on the test split (exact under mpirun too).")
    @Option(name: .long, help: "The checkpoint (.safetensors).") var checkpoint: String
    @Option(name: .long, help: "A config to use instead of the one stored in the checkpoint.") var config: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key (repeatable).", valueName: "key=value"))
    var overrides: [String] = []
    @Flag(help: "Ignore a temperature stored by 'lockstep calibrate'.") var uncalibrated = false
    @Option(help: ArgumentHelp("Also write the test split's logits, (samples, classes) float32 in sample order, as .npy or .safetensors.",
                               valueName: "file")) var logits: String?
    @Option(help: "Simulate N ranks as threads.") var simulateRanks: Int?

    func validate() throws {
        try validateSimulatedRanks(simulateRanks)
        if let logits, !["npy", "safetensors"].contains((logits as NSString).pathExtension.lowercased()) {
            throw ValidationError("--logits \(logits): expected a file name ending in .npy or .safetensors")
        }
    }

    func run() throws {
        let shared = SharedData()
        let (path, configPath, overrides, logitsPath) = (checkpoint, config, self.overrides, logits)
        let uncalibrated = self.uncalibrated
        launch(simulateRanks: simulateRanks) { comm in
            let (trainer, file) = try loadCheckpoint(path, config: configPath, overrides: overrides, shared: shared, communicator: comm)
            if uncalibrated { trainer.temperature = 1 }
            let r: EvaluationResult
            if let logitsPath {
                let (values, labels, result) = try trainer.testLogits()
                r = result
                if comm.rank == 0 {
                    try ArrayFile.writeMatrix(values, rows: labels.count, columns: trainer.config.data.classes, to: logitsPath)
                }
            } else {
                r = try trainer.evaluate()
            }
            guard comm.rank == 0 else { return }
            print(r.report(title: "checkpoint \(path) (step \(file.metadata["step"] ?? "?")) on \(comm.size) rank(s)"))
            if let logitsPath { print("logits: \(logitsPath)") }
        }
    }
}

/// Reads a checkpoint on rank 0 (broadcast to the others), builds a trainer from its stored
/// config (or `config`), and restores its weights and stored temperature.
func loadCheckpoint(_ path: String, config configPath: String?, overrides: [String], shared: SharedData,
                    communicator comm: Communicator) throws -> (Trainer, SafeTensorsFile) {
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
    trainer.temperature = try CheckpointMetadata.temperature(file.metadata, path: path)
    return (trainer, file)
}

struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit a softmax temperature on the validation split and store it in the checkpoint.",
        discussion: """
            Temperature scaling (Guo et al. 2017): the logits are divided by one scalar T chosen to \
            minimise the NLL on the config's validation split (data.validation_split > 0; never the \
            test split). Prints NLL, ECE, MCE and Brier score before and after on both splits, says \
            whether the model was over- or under-confident, stores T in the checkpoint's metadata \
            (rewritten atomically; eval and prediction then use it) and writes a reliability diagram \
            (SVG and PNG) of the test split before and after.
            """)
    @Option(name: .long, help: "The checkpoint (.safetensors).") var checkpoint: String
    @Option(name: .long, help: "A config to use instead of the one stored in the checkpoint.") var config: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key (repeatable).", valueName: "key=value"))
    var overrides: [String] = []
    @Option(help: "Where the reliability diagram goes (default: the checkpoint's directory).") var out: String?
    @Flag(help: "Fit and report, but leave the checkpoint as it is.") var dryRun = false
    @Option(help: "Simulate N ranks as threads.") var simulateRanks: Int?

    func validate() throws { try validateSimulatedRanks(simulateRanks) }

    func run() throws {
        let shared = SharedData()
        let (path, configPath, overrides, dryRun) = (checkpoint, config, self.overrides, self.dryRun)
        let outDir = out ?? (path as NSString).deletingLastPathComponent
        launch(simulateRanks: simulateRanks) { comm in
            let (trainer, file) = try loadCheckpoint(path, config: configPath, overrides: overrides, shared: shared, communicator: comm)
            trainer.temperature = 1
            let fit = try trainer.fitTemperature()
            let valBefore = try trainer.evaluateValidation()!, testBefore = try trainer.evaluate()
            trainer.temperature = Float(fit.temperature)
            let valAfter = try trainer.evaluateValidation()!, testAfter = try trainer.evaluate()
            guard comm.rank == 0 else { return }
            var lines = [String(format: "temperature %.4f fitted on %d validation samples: the model was ", fit.temperature, valBefore.count) + fit.verdict,
                         "split        temperature     NLL      ECE      MCE    Brier  accuracy"]
            for (name, r) in [("validation", valBefore), ("validation", valAfter), ("test", testBefore), ("test", testAfter)] {
                lines.append(name.padding(toLength: 10, withPad: " ", startingAt: 0) + String(format: "  %11.4f  %7.4f  %7.4f  %7.4f  %7.4f  %7.2f%%", r.temperature,
                                    r.negativeLogLikelihood, r.expectedCalibrationError, r.maximumCalibrationError, r.brierScore, 100 * r.accuracy))
            }
            let figure = ReliabilityDiagram.drawing(
                panels: [("test split, uncalibrated (T = 1)", testBefore), (String(format: "test split, T = %.3f", fit.temperature), testAfter)],
                caption: "\((path as NSString).lastPathComponent): temperature fitted on the validation split; 15 confidence bins")
            try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
            let svgPath = (outDir as NSString).appendingPathComponent("reliability.svg")
            let pngPath = (outDir as NSString).appendingPathComponent("reliability.png")
            try writeAtomically(Array(figure.svg().utf8), to: svgPath)
            try writeAtomically(try figure.raster().png(), to: pngPath)
            lines.append("reliability diagram: \(svgPath), \(pngPath)")
            if dryRun {
                lines.append("--dry-run: \(path) left unchanged")
            } else {
                try writeAtomically(try file.encoded(updatingMetadata: [CheckpointMetadata.temperatureKey: "\(Float(fit.temperature))"]), to: path)
                lines.append("stored temperature \(Float(fit.temperature)) in \(path) (eval uses it; --uncalibrated ignores it)")
            }
            print(lines.joined(separator: "\n"))
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
