// Classifying inputs with a deployed model: preprocessing exactly as training normalised its
// data, batched forward passes, the stored temperature, softmax, and the top-k classes.
import Collectives
import Datasets
import Foundation
import NN
import TensorCore

public struct Prediction: Sendable {
    public var name: String
    /// Class index, class name and probability, most probable first.
    public var top: [(index: Int, name: String, probability: Double)]

    public var line: String {
        "\(name): " + top.map { String(format: "%@ %.4f", $0.name as NSString, $0.probability) }.joined(separator: ", ")
    }

    public var json: String {
        let top = self.top.map { ["index": $0.index, "class": $0.name, "probability": $0.probability] as [String: Any] }
        let data = (try? JSONSerialization.data(withJSONObject: ["input": name, "top": top] as [String: Any], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

extension DeployedModel {
    /// The model's input for one item, normalised as the training data was (the same float
    /// formula, so a test image gives the logits that evaluation gives it).
    func write(_ input: PredictInput, into out: UnsafeMutablePointer<Float>) {
        switch (input.values, normalization) {
        case let (.bytes(b), .pixels(mean, std)):
            let scale = 1 / (255 * std), shift = -mean / std
            for i in 0..<b.count { out[i] = Float(b[i]) * scale + shift }
        case let (.bytes(b), _):
            for i in 0..<b.count { out[i] = Float(b[i]) / 255 }
        case let (.features(f), .features(mean, std)):
            for i in 0..<f.count { out[i] = Float((f[i] - mean[i]) / std[i]) }
        case let (.features(f), _):
            for i in 0..<f.count { out[i] = Float(f[i]) }
        }
    }

    /// Class probabilities (count × classes, row-major) for `inputs`, in batches of `batch`.
    public func probabilities(_ inputs: ArraySlice<PredictInput>, batch: Int = 256) throws -> [Float] {
        let classes = classNames.count, size = model.inputShape.reduce(1, *)
        var out = [Float]()
        out.reserveCapacity(inputs.count * classes)
        var start = inputs.startIndex
        while start < inputs.endIndex {
            let end = min(start + batch, inputs.endIndex)
            let x = Tensor(zeros: [end - start] + model.inputShape)
            for (i, item) in inputs[start..<end].enumerated() {
                let count: Int
                switch item.values { case .bytes(let b): count = b.count; case .features(let f): count = f.count }
                precondition(count == size, "\(item.name): \(count) values for an input of \(size)")
                write(item, into: x.data + i * size)
            }
            let logits = try model.forward(x, context: ForwardContext(mode: .evaluation, sampleIndices: Array(start..<end)))
            for r in 0..<(end - start) {
                let row = (0..<classes).map { Double(logits.data[r * classes + $0]) / Double(temperature) }
                let top = row.max()!
                let e = row.map { exp($0 - top) }
                let sum = e.reduce(0, +)
                out += e.map { Float($0 / sum) }
            }
            start = end
        }
        return out
    }

    /// The k most probable classes of each row of `probabilities`.
    public func predictions(_ names: [String], probabilities p: [Float], k: Int) -> [Prediction] {
        let classes = classNames.count
        return names.enumerated().map { i, name in
            let row = (0..<classes).map { (index: $0, probability: Double(p[i * classes + $0])) }
            // Ties go to the lower index, like the arg-max of evaluation.
            let sorted = row.sorted { $0.probability != $1.probability ? $0.probability > $1.probability : $0.index < $1.index }
            return Prediction(name: name, top: sorted.prefix(k).map { ($0.index, classNames[$0.index], $0.probability) })
        }
    }
}
