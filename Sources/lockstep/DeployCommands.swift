// `lockstep export`: a checkpoint as an ONNX model.
import ArgumentParser
import Collectives
import Datasets
import Deploy
import Formats
import Foundation
import Training

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a checkpoint as an ONNX model (opset 17).",
        discussion: """
            The model's input is "input" (N, ...input shape) float32: images as pixel values in \\
            [0, 1] (byte/255), CSV rows as raw features; the checkpoint's normalisation is inside \\
            the graph, and so is a temperature stored by 'lockstep calibrate'. The output is \\
            "logits" (N, classes), or "probabilities" with --softmax. Class names and the input \\
            convention are in the model's metadata.
            """)
    @Option(name: .long, help: "The checkpoint (.safetensors).") var checkpoint: String
    @Option(name: .long, help: "Where to write the ONNX model.") var onnx: String
    @Flag(help: "End the graph with a softmax (probabilities instead of logits).") var softmax = false
    @Flag(help: "Leave out a temperature stored by 'lockstep calibrate'.") var uncalibrated = false

    func validate() throws {
        guard (onnx as NSString).pathExtension.lowercased() == "onnx" else {
            throw ValidationError("--onnx \(onnx): expected a file name ending in .onnx")
        }
    }

    func run() throws {
        do {
            let deployed = try DeployedModel(checkpoint: checkpoint)
            let bytes = try ONNXExporter.export(model: deployed.model, normalization: deployed.normalization,
                                                temperature: uncalibrated ? 1 : deployed.temperature,
                                                classNames: deployed.classNames, softmax: softmax, name: deployed.config.name)
            try writeAtomically([UInt8](bytes), to: onnx)
            print("wrote \(onnx): \(deployed.model.layers.count) layers, \(deployed.model.parameterCount) parameters, input \(deployed.model.inputShape), "
                  + "output \(softmax ? "probabilities" : "logits") over \(deployed.classNames.count) classes"
                  + (deployed.temperature != 1 && !uncalibrated ? ", temperature \(deployed.temperature)" : ""))
        } catch {
            printError("\(error)")
            Foundation.exit(1)
        }
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify PNG, JPEG or PGM images, IDX image files and CSV rows with a checkpoint.",
        discussion: """
            Prints the top-k classes with their probabilities (calibrated when the checkpoint \\
            stores a temperature) per input, in input order; --json prints one JSON object per \\
            line. Under mpirun each rank classifies a share of the inputs and rank 0 prints them all.
            """)
    @Option(name: .long, help: "The checkpoint (.safetensors).") var checkpoint: String
    @Argument(help: "Inputs: .png, .jpg, .pgm, .csv (one input per row) or IDX image files (one per image). An image of another size than the model's is scaled and centre-cut as evaluation images were.") var inputs: [String]
    @Option(help: "How many classes to print per input.") var top = 3
    @Flag(help: "One JSON object per line.") var json = false
    @Option(help: "Simulate N ranks as threads.") var simulateRanks: Int?

    func validate() throws {
        try validateSimulatedRanks(simulateRanks)
        guard !inputs.isEmpty else { throw ValidationError("give at least one input file") }
        guard top >= 1 else { throw ValidationError("--top must be at least 1") }
    }

    func run() throws {
        let (path, inputs, top, json) = (checkpoint, self.inputs, self.top, self.json)
        launch(simulateRanks: simulateRanks) { comm in
            let deployed = try DeployedModel(checkpoint: path, bytes: try readOnRootAndBroadcast(path, communicator: comm))
            let items = try inputs.flatMap { try InputReader.read($0, shape: deployed.model.inputShape, csv: deployed.config.data.csv, resize: deployed.imageResize) }
            let classes = deployed.classNames.count
            let share = GlobalBatchSampler.shard(total: items.count, rank: comm.rank, worldSize: comm.size)
            let own = try deployed.probabilities(items[share])
            let all = try gatherRows(own, rows: share, totalRows: items.count, width: classes, communicator: comm)
            guard comm.rank == 0 else { return }
            for p in deployed.predictions(items.map { $0.name }, probabilities: all, k: min(top, classes)) {
                print(json ? p.json : p.line)
            }
        }
    }
}
