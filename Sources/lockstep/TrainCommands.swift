// `lockstep train` and `lockstep compare-bn`: training from a config.
import ArgumentParser
import Collectives
import Foundation
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
            print(try options.loadConfig().resolvedYAML, terminator: "")
            return
        }
        let shared = SharedData()
        let (options, dump, resume, overwrite) = (self.options, dumpParameters, self.resume, self.overwrite)
        StopSignal.install()
        launch(simulateRanks: options.simulateRanks) { comm in
            let config = try options.loadConfig()
            let trainer = try Trainer(config: config, communicator: comm, data: try shared.get(config))
            try trainer.run(resume: resume, overwrite: overwrite)
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

    func run() throws {
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
            let report = Training.Report(title: "\(base.name): synchronized vs local batch norm on \(comm.size) rank(s), global batch \(base.train.globalBatch)",
                                runs: try dirs.map { try RunMetrics.load($0) })
            try report.write(to: out)
            print(report.markdown)
            print("report: \(out)/report.html")
        }
    }
}

