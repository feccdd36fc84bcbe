// `lockstep export`: a checkpoint as an ONNX model.
import ArgumentParser
import Deploy
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
