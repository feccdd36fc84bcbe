// ONNX export checked by ONNX Runtime, and tools/lockstep_torch.py checked by PyTorch: every
// layer kind (a "zoo" model on synthetic data, with a calibration temperature), and the shipped
// MLP, CNN and ResNet on 1,000 Fashion-MNIST test images, give Lockstep's own logits within
// 1e-4; onnx.checker accepts every file.
import Foundation
import TrainingTestSupport
import XCTest

final class ONNXExportTests: XCTestCase {
    let cli = CLI()
    var script: String { repositoryRoot.appendingPathComponent("tools/onnx_check.py").path }

    func requirePython() throws {
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let probe = try cli.run(["python3", "-c", "import onnx, onnxruntime, numpy"])
        guard probe.status == 0 else { throw XCTSkip("python3 lacks onnx/onnxruntime (bash launch/setup --tests installs them)") }
    }

    /// A Python with torch and numpy (Debian's python3-torch serves /usr/bin/python3), or nil.
    lazy var torchPython: String? = ["python3", "/usr/bin/python3"].first { python in
        (try? cli.run([python, "-c", "import torch, numpy"]).status) == 0
    }

    /// Trains `config` briefly, exports it, writes eval's logits, and runs tools/onnx_check.py.
    func check(_ config: String, sets: [String], data: [String], calibrate: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = makeTempDir("lockstep-onnx")
        let train = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)"] + sets.flatMap { ["--set", $0] },
                                timeout: 300)
        XCTAssertEqual(train.status, 0, train.output, file: file, line: line)
        let checkpoint = "\(dir)/best.safetensors"
        if calibrate {
            let cal = try cli.run([cli.lockstep, "calibrate", "--checkpoint", checkpoint, "--out", dir])
            XCTAssertEqual(cal.status, 0, cal.output, file: file, line: line)
        }
        let export = try cli.run([cli.lockstep, "export", "--checkpoint", checkpoint, "--onnx", "\(dir)/model.onnx"])
        XCTAssertEqual(export.status, 0, export.output, file: file, line: line)
        if calibrate { XCTAssertTrue(export.output.contains("temperature"), export.output, file: file, line: line) }
        let eval = try cli.run([cli.lockstep, "eval", "--checkpoint", checkpoint, "--logits", "\(dir)/logits.npy"], timeout: 300)
        XCTAssertEqual(eval.status, 0, eval.output, file: file, line: line)
        // 1e-4: float32 logits of order 1-10 through a few dozen operators whose kernels (im2col
        // GEMM here, direct convolution there) round differently; 1e-4 is ~100 ulps at 10.
        let check = try cli.run(["python3", script, "\(dir)/model.onnx", "\(dir)/logits.npy"] + data + ["--count", "1000", "--tolerance", "1e-4"],
                                timeout: 300)
        XCTAssertEqual(check.status, 0, check.output, file: file, line: line)
        XCTAssertTrue(check.output.contains("max |ONNX Runtime - Lockstep|"), check.output, file: file, line: line)
        guard let python = torchPython else {
            print("ONNXExportTests: no Python with torch (bash launch/setup --tests installs python3-torch); the PyTorch loader is not checked")
            return
        }
        let torch = try cli.run([python, repositoryRoot.appendingPathComponent("tools/lockstep_torch.py").path, checkpoint, "\(dir)/logits.npy"]
                                + data + ["--count", "1000", "--tolerance", "1e-4"], timeout: 300)
        XCTAssertEqual(torch.status, 0, torch.output, file: file, line: line)
        XCTAssertTrue(torch.output.contains("max |torch - Lockstep|"), torch.output, file: file, line: line)
    }

    func testEveryLayerKindMatchesONNXRuntime() throws {
        try requirePython()
        let data = try writeIDXDirectory()
        let zoo = """
            name: zoo
            data: {path: \(data), classes: 4, validation_split: 0.2, augment: {horizontal_flip: true}}
            model:
              - conv: {out: 6, kernel: 3, padding: 1, bias: false}
              - batchnorm: {}
              - prelu: {per_channel: true}
              - residual:
                  layers:
                    - conv: {out: 6, kernel: 3, padding: 1}
                    - groupnorm: {groups: 2}
                    - gelu
                    - conv: {out: 6, kernel: 3, padding: 1}
              - elu: {alpha: 0.5}
              - residual:
                  layers:
                    - conv: {out: 8, kernel: 3, stride: 2, padding: 1}
                    - instancenorm: {}
                    - silu
              - maxpool: {size: 2}
              - layernorm: {}
              - leaky_relu: {slope: 0.1}
              - avgpool: {size: 1}
              - flatten
              - dense: {out: 16}
              - batchnorm: {}
              - softplus
              - dropout: {p: 0.3}
              - dense: {out: 12}
              - sigmoid
              - dense: {out: 8}
              - tanh
              - prelu: {}
              - dense: {out: 4}
            optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
            train: {epochs: 2, global_batch: 24, log_every: 0}
            """
        try check(try cli.writeConfig(zoo), sets: [], data: ["--idx", data], calibrate: true)
        // The global average pool ends in a flat (N, C) output too.
        let pooled = zoo.replacingOccurrences(of: "  - avgpool: {size: 1}\n  - flatten\n", with: "  - global_avgpool\n")
        try check(try cli.writeConfig(pooled), sets: [], data: ["--idx", data])
    }

    func testShippedFashionMNISTModelsMatchONNXRuntime() throws {
        try requirePython()
        let fmnist = "/usr/share/datasets/fashion-mnist"
        guard FileManager.default.fileExists(atPath: fmnist) else { throw XCTSkip("\(fmnist) missing (apt-get install dataset-fashion-mnist)") }
        for name in ["fmnist-mlp", "fmnist-cnn", "fmnist-resnet"] {
            let config = repositoryRoot.appendingPathComponent("configs/\(name).yaml").path
            try check(config, sets: ["train.max_steps=20", "data.eval_batch=500"], data: ["--idx", fmnist])
        }
    }

    func testBadExportArguments() throws {
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let bad = try cli.run([cli.lockstep, "export", "--checkpoint", "/nonexistent.safetensors", "--onnx", "/tmp/x.onnx"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("/nonexistent.safetensors"), bad.output)
        let ext = try cli.run([cli.lockstep, "export", "--checkpoint", "/nonexistent.safetensors", "--onnx", "/tmp/x.pb"])
        XCTAssertNotEqual(ext.status, 0)
        XCTAssertTrue(ext.output.contains("ending in .onnx"), ext.output)
    }
}
