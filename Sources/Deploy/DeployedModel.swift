// A checkpoint as a model to run: rebuilt from the config stored in it, on the input shape its
// metadata names, with its weights, preprocessing, class names and temperature. Needs neither
// the data set nor the config file.
import Collectives
import Configuration
import Datasets
import Formats
import Foundation
import NN

public struct DeployedModel {
    public let model: Model
    public let normalization: InputNormalization
    public let classNames: [String]
    public let temperature: Float
    public let config: TrainingConfig
    /// Images: the side of the square evaluation samples were centre-cut from (metadata
    /// 'image_resize'; older checkpoints: the input's own side). Nil for feature inputs.
    public let imageResize: Int?

    public init(checkpoint path: String, bytes: [UInt8]? = nil) throws {
        let file = try bytes.map { try SafeTensorsFile(bytes: $0, path: path) } ?? SafeTensorsFile.read(path: path)
        let meta = file.metadata
        guard let yaml = meta["config"] else { throw ExportError("\(path): no config in the checkpoint (not written by lockstep train?)") }
        config = try TrainingConfig.parse(yaml: yaml, file: "\(path) (stored config)")
        guard let shapeText = meta["input_shape"], let normalization = InputNormalization(metadata: meta) else {
            throw ExportError("\(path): the checkpoint does not describe its input (no 'input_shape'/'normalization' metadata: written by an older Lockstep); retrain it, or resume it with 'lockstep train --resume' so a new checkpoint carries them")
        }
        let shape = shapeText.split(separator: ",").compactMap { Int($0) }
        guard !shape.isEmpty, shape.allSatisfy({ $0 > 0 }), shape.count == shapeText.split(separator: ",").count else {
            throw ExportError("\(path): metadata 'input_shape' is '\(shapeText)', expected positive integers separated by commas")
        }
        self.normalization = normalization
        if let names = meta["class_names"] {
            guard let data = names.data(using: .utf8), let list = try? JSONSerialization.jsonObject(with: data) as? [String],
                  list.count == config.data.classes else {
                throw ExportError("\(path): metadata 'class_names' is '\(names)', expected a JSON array of \(config.data.classes) strings")
            }
            classNames = list
        } else {
            classNames = config.data.resolvedClassNames
        }
        temperature = try CheckpointMetadata.temperature(meta, path: path)
        let storedResize = meta["image_resize"].flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil }
        imageResize = shape.count == 3 ? storedResize ?? shape[1] : nil
        // Evaluation never talks to other ranks, so local BN on a single process serves.
        let builder = ModelBuilder(batchNormMode: .local, communicator: SingleProcessCommunicator())
        model = try builder.build(config.model, inputShape: shape)
        for p in model.namedTensors {
            guard let e = file.entry(p.name) else { throw ExportError("\(path): tensor '\(p.name)' is missing") }
            guard e.shape == p.shape else { throw ExportError("\(path): tensor '\(p.name)' has shape \(e.shape), the model expects \(p.shape)") }
            file.copy(e, into: p.values.baseAddress!)
            if let bad = p.values.firstIndex(where: { !$0.isFinite }) {
                throw ExportError("\(path): tensor '\(p.name)' holds \(p.values[bad]) at index \(bad)")
            }
        }
    }
}
