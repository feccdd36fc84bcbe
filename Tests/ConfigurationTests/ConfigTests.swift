// The strict YAML config: the shipped CNN config, errors that name the key and the file, `--set`
// overrides, and shape errors from the model builder.
import Collectives
import Configuration
import Foundation
import NN
import Optimizers
import TestSupport
import Training
import TrainingTestSupport
import XCTest

final class ConfigTests: XCTestCase {
    /// The smallest valid config: a model is required.
    let minimal = """
        model:
          - flatten
          - dense: {out: 10}
        """

    func configError(_ body: @autoclosure () throws -> TrainingConfig, mentions parts: [String],
                     file: StaticString = #filePath, line: UInt = #line) {
        assertThrows(try body(), ConfigError.self, message: { $0.message }, mentions: parts, file: file, line: line)
    }

    func testShippedCNNConfig() throws {
        let path = repositoryRoot.appendingPathComponent("configs/fmnist-cnn.yaml").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let config = try TrainingConfig.parse(yaml: text, file: path)
        XCTAssertEqual(config.name, "fmnist-cnn")
        XCTAssertEqual(config.file, path)
        XCTAssertEqual(config.data.path, "/usr/share/datasets/fashion-mnist")
        XCTAssertEqual(config.data.trainSplit, "train")
        XCTAssertEqual(config.data.testSplit, "t10k")
        XCTAssertEqual(config.data.classes, 10)
        XCTAssertTrue(config.data.augment.horizontalFlip)
        XCTAssertEqual(config.data.augment.cropPadding, 0)
        XCTAssertNil(config.data.mean)
        let bn = LayerSpec.batchNorm(momentum: 0.1, epsilon: 1e-5)
        XCTAssertEqual(config.model, [
            .conv(out: 32, kernel: 3, stride: 1, padding: 1, bias: false, initializer: .torchDefault),
            bn, .relu, .maxPool(size: 2, stride: nil),
            .conv(out: 64, kernel: 3, stride: 1, padding: 1, bias: false, initializer: .torchDefault),
            bn, .relu, .maxPool(size: 2, stride: nil),
            .flatten,
            .dense(out: 128, bias: false, initializer: .torchDefault),
            bn, .relu, .dropout(probability: 0.25),
            .dense(out: 10, bias: true, initializer: .torchDefault),
        ])
        XCTAssertEqual(config.optimizer.kind, .sgd)
        XCTAssertEqual(config.optimizer.learningRate, 0.05)
        XCTAssertEqual(config.optimizer.momentum, 0.9)
        XCTAssertEqual(config.optimizer.weightDecay, 5e-4)
        XCTAssertFalse(config.optimizer.nesterov)
        XCTAssertEqual(config.schedule.kind, .cosine)
        XCTAssertEqual(config.train.epochs, 10)
        XCTAssertEqual(config.train.globalBatch, 128)
        XCTAssertEqual(config.train.seed, 0)
        XCTAssertEqual(config.train.accumulateSteps, 1)
        XCTAssertEqual(config.bn.mode, .sync)

        // The layers build, with the expected shapes and parameter count.
        let model = try ModelBuilder(communicator: SingleProcessCommunicator()).build(config.model, inputShape: [1, 28, 28])
        XCTAssertEqual(model.outputShape, [10])
        XCTAssertEqual(model.layers.map { $0.name }, [
            "conv1", "batchnorm1", "relu1", "maxpool1", "conv2", "batchnorm2", "relu2", "maxpool2",
            "flatten1", "dense1", "batchnorm3", "relu3", "dropout1", "dense2",
        ])
        // conv 288 + bn 64 + conv 18432 + bn 128 + dense 128·3136 + bn 256 + dense 1280 + 10.
        XCTAssertEqual(model.parameterCount, 288 + 64 + 18_432 + 128 + 401_408 + 256 + 1_290)
        XCTAssertTrue(model.layers[1] is SyncBatchNorm)
    }

    func testDefaultsFromMinimalConfig() throws {
        let config = try TrainingConfig.parse(yaml: minimal, file: "minimal.yaml")
        XCTAssertEqual(config.name, "minimal", "the name defaults to the file's base name")
        XCTAssertEqual(config.train.epochs, 10)
        XCTAssertEqual(config.optimizer.kind, .sgd)
        XCTAssertEqual(config.model, [.flatten, .dense(out: 10, bias: true, initializer: nil)])
    }

    /// `dense: {out: classes}` takes data.classes, also inside a residual block; the shipped
    /// images.yaml ends so, and follows `--set data.classes`.
    func testDenseOutClassesFollowsDataClasses() throws {
        let yaml = "data: {classes: 7}\nmodel:\n  - flatten\n  - residual: {layers: [dense: {out: classes}]}\n  - dense: {out: classes}\n"
        let config = try TrainingConfig.parse(yaml: yaml, file: "classes.yaml")
        XCTAssertEqual(config.model.last, .dense(out: 7, bias: true, initializer: nil))
        guard case .residual(let inner, _) = config.model[1] else { return XCTFail("\(config.model)") }
        XCTAssertEqual(inner, [.dense(out: 7, bias: true, initializer: nil)])
        let images = repositoryRoot.appendingPathComponent("configs/images.yaml").path
        let five = try TrainingConfig.load(path: images, overrides: ["data.classes=5"])
        XCTAssertEqual(five.model.last, .dense(out: 5, bias: true, initializer: nil))
        configError(try TrainingConfig.parse(yaml: "model:\n  - dense: {out: class}\n", file: "typo.yaml"), mentions: ["out", "typo.yaml"])
    }

    func testUnknownKeyNamesDottedKeyAndFile() {
        let yaml = minimal + "\ntrain:\n  epoch: 3\n"
        configError(try TrainingConfig.parse(yaml: yaml, file: "runs/typo.yaml"), mentions: ["train.epoch", "runs/typo.yaml"])
    }

    func testUnknownTopLevelKey() {
        let yaml = minimal + "\noptimiser:\n  name: sgd\n"
        configError(try TrainingConfig.parse(yaml: yaml, file: "top.yaml"), mentions: ["optimiser", "top.yaml"])
    }

    func testUnknownLayerArgument() {
        let yaml = "model:\n  - dense: {out: 10, biass: false}\n"
        configError(try TrainingConfig.parse(yaml: yaml, file: "layer.yaml"), mentions: ["biass", "layer.yaml"])
    }

    func testConstantWeightInitializerIsRefused() throws {
        let yaml = "model:\n  - dense: {out: 10, init: zeros}\n"
        configError(try TrainingConfig.parse(yaml: yaml, file: "init.yaml"),
                    mentions: ["init.yaml", "init", "zeros", "he_normal", "torch_default"])
        let ok = try TrainingConfig.parse(yaml: "model:\n  - dense: {out: 10, init: torch_default}\n", file: "ok.yaml")
        XCTAssertEqual(ok.model, [.dense(out: 10, bias: true, initializer: .torchDefault)])
    }

    func testWrongTypeNamesKey() {
        let yaml = minimal + "\ntrain:\n  epochs: abc\n"
        configError(try TrainingConfig.parse(yaml: yaml, file: "type.yaml"), mentions: ["train.epochs", "abc", "type.yaml"])
    }

    func testOutOfRangeValue() {
        let yaml = minimal + "\noptimizer:\n  momentum: 1.5\n"
        configError(try TrainingConfig.parse(yaml: yaml, file: "range.yaml"), mentions: ["optimizer.momentum"])
    }

    func testUnknownChoice() {
        let yaml = minimal + "\noptimizer:\n  name: adadelta\n"
        configError(try TrainingConfig.parse(yaml: yaml, file: "choice.yaml"), mentions: ["optimizer.name", "adadelta", "rmsprop"])
    }

    func testConvAlgorithmDefaultAndPerLayerChoice() throws {
        let yaml = "model:\n  - conv: {out: 4, kernel: 3, padding: 1, algorithm: winograd-f2}\n  - conv: {out: 4, kernel: 3}\n  - flatten\n  - dense: {out: 2}\n"
        let config = try TrainingConfig.parse(yaml: yaml, file: "conv.yaml", overrides: ["conv.algorithm=direct"])
        XCTAssertEqual(config.conv.algorithm, .direct)
        guard case let .conv(_, _, _, _, _, _, _, first) = config.model[0], case let .conv(_, _, _, _, _, _, _, second) = config.model[1] else {
            return XCTFail("expected two conv layers")
        }
        XCTAssertEqual(first, .winogradF2)
        XCTAssertNil(second, "a layer without its own choice takes conv.algorithm")
        XCTAssertEqual(try TrainingConfig.parse(yaml: yaml, file: "conv.yaml").conv.algorithm, .auto)
        configError(try TrainingConfig.parse(yaml: yaml, file: "conv.yaml", overrides: ["conv.algorithm=fft"]),
                    mentions: ["conv.algorithm", "fft", "winograd"])
        // A layer's own Winograd choice must apply to it: the builder names the layer.
        let strided = "model:\n  - conv: {out: 4, kernel: 3, stride: 2, algorithm: winograd}\n  - flatten\n  - dense: {out: 2}\n"
        let specs = try TrainingConfig.parse(yaml: strided, file: "conv.yaml").model
        XCTAssertThrowsError(try ModelBuilder(communicator: SingleProcessCommunicator()).build(specs, inputShape: [1, 8, 8])) { error in
            XCTAssertTrue("\(error)".contains("conv1") && "\(error)".contains("stride 1"), "\(error)")
        }
    }

    func testUnknownLayer() {
        let yaml = "model:\n  - flatten\n  - convolution: {out: 8, kernel: 3}\n"
        configError(try TrainingConfig.parse(yaml: yaml, file: "layers.yaml"), mentions: ["convolution", "layers.yaml", "model[1]"])
    }

    func testMissingRequiredLayerArgument() {
        let yaml = "model:\n  - conv: {out: 8}\n"
        configError(try TrainingConfig.parse(yaml: yaml, file: "conv.yaml"), mentions: ["kernel"])
    }

    func testMissingModel() {
        configError(try TrainingConfig.parse(yaml: "train:\n  epochs: 2\n", file: "nomodel.yaml"), mentions: ["model"])
    }

    func testOverridesTakeEffect() throws {
        let config = try TrainingConfig.parse(yaml: minimal, file: "o.yaml",
                                              overrides: ["train.epochs=3", "optimizer.lr=0.1", "optimizer.name=adamw",
                                                          "bn.mode=local", "data.augment.crop_padding=2"])
        XCTAssertEqual(config.train.epochs, 3)
        XCTAssertEqual(config.optimizer.learningRate, 0.1)
        XCTAssertEqual(config.optimizer.kind, .adamw)
        XCTAssertEqual(config.bn.mode, .local)
        XCTAssertEqual(config.data.augment.cropPadding, 2)
        XCTAssertTrue(config.resolvedYAML.contains("epochs: 3"), config.resolvedYAML)
    }

    func testOverrideReplacesValueFromFile() throws {
        let yaml = minimal + "\ntrain:\n  epochs: 7\n  global_batch: 64\n"
        let config = try TrainingConfig.parse(yaml: yaml, file: "f.yaml", overrides: ["train.epochs=2"])
        XCTAssertEqual(config.train.epochs, 2)
        XCTAssertEqual(config.train.globalBatch, 64, "other keys of the section stay")
    }

    func testOverrideOfUnknownKeyIsRejected() {
        configError(try TrainingConfig.parse(yaml: minimal, file: "o.yaml", overrides: ["train.epoch=3"]),
                    mentions: ["train.epoch"])
    }

    func testOverrideWithWrongTypeIsRejected() {
        configError(try TrainingConfig.parse(yaml: minimal, file: "o.yaml", overrides: ["train.epochs=many"]),
                    mentions: ["train.epochs", "many"])
    }

    func testMalformedOverride() {
        configError(try TrainingConfig.parse(yaml: minimal, file: "o.yaml", overrides: ["train.epochs"]),
                    mentions: ["train.epochs"])
    }

    func testShapeErrorNamesLayerAndShape() {
        let builder = ModelBuilder(communicator: SingleProcessCommunicator())
        XCTAssertThrowsError(try builder.build([.dense(out: 10, bias: true, initializer: nil)], inputShape: [1, 28, 28])) { error in
            guard let shapeError = error as? ShapeError else {
                return XCTFail("expected ShapeError, got \(type(of: error)): \(error)")
            }
            XCTAssertTrue(shapeError.message.contains("dense1"), shapeError.message)
            XCTAssertTrue(shapeError.message.contains("[1, 28, 28]"), shapeError.message)
        }
    }

    func testShapeErrorForPoolingLargerThanInput() {
        let builder = ModelBuilder(communicator: SingleProcessCommunicator())
        XCTAssertThrowsError(try builder.build([.maxPool(size: 2, stride: nil), .maxPool(size: 2, stride: nil)],
                                               inputShape: [1, 3, 3])) { error in
            XCTAssertTrue(error is ShapeError, "\(error)")
            XCTAssertTrue("\(error)".contains("maxpool2"), "\(error)")
        }
    }
}

final class ShapeCheckTests: XCTestCase {
    func testDeclaredInputSizesAreChecked() throws {
        let yaml = """
        model:
          - conv: {in: 1, out: 8, kernel: 3}
          - flatten
          - dense: {in: 784, out: 10}
        """
        let config = try TrainingConfig.parse(yaml: yaml, file: "shapes.yaml")
        let builder = ModelBuilder(communicator: SingleProcessCommunicator())
        XCTAssertThrowsError(try builder.build(config.model, inputShape: [1, 28, 28])) { error in
            XCTAssertEqual("\(error)", "dense1: dense expects input [784] but the layer before it gives [5408]")
        }
        XCTAssertThrowsError(try builder.build(config.model, inputShape: [3, 28, 28])) { error in
            XCTAssertEqual("\(error)", "conv1: conv expects 1 input channels but the layer before it gives [3, 28, 28]")
        }
        let fixed = try TrainingConfig.parse(yaml: yaml.replacingOccurrences(of: "in: 784", with: "in: 5408"), file: "shapes.yaml")
        XCTAssertEqual(try builder.build(fixed.model, inputShape: [1, 28, 28]).outputShape, [10])
    }

    func testNormalisationLayersFromConfig() throws {
        let yaml = """
        model:
          - conv: {out: 4, kernel: 3, padding: 1}
          - groupnorm: {groups: 2}
          - instancenorm
          - layernorm
          - flatten
          - layernorm: {epsilon: 1.0e-6}
          - dense: {out: 3}
        """
        let config = try TrainingConfig.parse(yaml: yaml, file: "norms.yaml")
        let model = try ModelBuilder(communicator: SingleProcessCommunicator()).build(config.model, inputShape: [1, 6, 6])
        XCTAssertEqual(model.layers.map { $0.name }, ["conv1", "groupnorm1", "instancenorm1", "layernorm1", "flatten1", "layernorm2", "dense1"])
        XCTAssertEqual(model.layers.compactMap { ($0 as? GroupNorm)?.groups }, [2, 4, 1, 1])
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: "model:\n  - groupnorm: {}\n", file: "g.yaml")) {
            XCTAssertTrue("\($0)".contains("'model[0].groupnorm.groups': expected an integer (required)"), "\($0)")
        }
        XCTAssertThrowsError(try ModelBuilder(communicator: SingleProcessCommunicator())
            .build([.conv(out: 6, kernel: 1, stride: 1, padding: 0, bias: true, initializer: nil), .groupNorm(groups: 4, epsilon: 1e-5, kind: "groupnorm")], inputShape: [1, 4, 4])) {
            XCTAssertTrue("\($0)".contains("6 channels do not divide into 4 groups"), "\($0)")
        }
    }

    func testSmoothActivationsAndLeCunInitFromConfig() throws {
        let yaml = """
        model:
          - dense: {out: 8, init: lecun_normal}
          - elu: {alpha: 0.5}
          - dense: {out: 8}
          - gelu
          - dense: {out: 8}
          - swish
          - dense: {out: 8, init: lecun_uniform}
          - softplus
          - dense: {out: 3}
        """
        let config = try TrainingConfig.parse(yaml: yaml, file: "smooth.yaml")
        let model = try ModelBuilder(communicator: SingleProcessCommunicator()).build(config.model, inputShape: [4])
        XCTAssertEqual(model.layers.map { $0.name }, ["dense1", "elu1", "dense2", "gelu1", "dense3", "silu1", "dense4", "softplus1", "dense5"])
        XCTAssertEqual((model.layers[1] as? ELU)?.alpha, 0.5)
        XCTAssertEqual(model.parameters.entries.first { $0.name == "dense1.weight" }?.initializer, .lecunNormal)
        XCTAssertEqual(model.parameters.entries.first { $0.name == "dense2.weight" }?.initializer, .heNormal, "He before a ReLU-like curve")
        XCTAssertEqual(model.parameters.entries.first { $0.name == "dense4.weight" }?.initializer, .lecunUniform)
    }

    func testAdaptiveOptimizersFromConfig() throws {
        let base = "model: [flatten, {dense: {out: 2}}]\n"
        let rms = try TrainingConfig.parse(yaml: base + "optimizer: {name: rmsprop, alpha: 0.9, centered: true, momentum: 0.5}\n", file: "o.yaml")
        let arena = Arena([Parameter(name: "w", shape: [2], initializer: .zeros)], withGradients: true)
        let optimizer = try XCTUnwrap(rms.optimizer.make(arena: arena) as? RMSProp)
        XCTAssertEqual(optimizer.alpha, 0.9)
        XCTAssertTrue(optimizer.centered)
        XCTAssertEqual(optimizer.momentum, 0.5)
        let ada = try TrainingConfig.parse(yaml: base + "optimizer: {name: adagrad, lr: 0.1}\n", file: "o.yaml")
        XCTAssertTrue(ada.optimizer.make(arena: arena) is AdaGrad)
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: base + "optimizer: {name: adadelta}\n", file: "o.yaml")) {
            XCTAssertTrue("\($0)".contains("rmsprop") && "\($0)".contains("adagrad"), "\($0)")
        }
    }

    func testLinearLearningRateScaling() throws {
        let yaml = "model: [flatten, {dense: {out: 2}}]\noptimizer: {lr: 0.1, scale_lr: linear, reference_batch: 256}\ntrain: {global_batch: 1024}\n"
        let config = try TrainingConfig.parse(yaml: yaml, file: "s.yaml")
        XCTAssertEqual(config.optimizer.baseRate(globalBatch: config.train.globalBatch), 0.4, accuracy: 1e-12)
        let plain = try TrainingConfig.parse(yaml: yaml, file: "s.yaml", overrides: ["optimizer.scale_lr=none"])
        XCTAssertEqual(plain.optimizer.baseRate(globalBatch: 1024), 0.1)
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: yaml, file: "s.yaml", overrides: ["optimizer.scale_lr=sqrt"])) {
            XCTAssertTrue("\($0)".contains("optimizer.scale_lr"), "\($0)")
        }
    }
}
