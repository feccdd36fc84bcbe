// Small synthetic data sets, configs and the command-line runner that the tests of Training and
// the targets above it share.
import Datasets
import Formats
import Foundation
import TensorCore
import Training
import XCTest

/// Images of `side`×`side` pixels in `classes` classes: a class-specific bright square on noise.
public func syntheticPixels(count: Int, side: Int, classes: Int, seed: UInt64) -> (pixels: [UInt8], labels: [UInt8]) {
    let rng = Philox(seed: seed).stream(.test, 7, 0)
    var pixels = [UInt8](repeating: 0, count: count * side * side)
    var labels = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        let label = i % classes
        labels[i] = UInt8(label)
        for p in 0..<(side * side) {
            let y = p / side, x = p % side
            let inSquare = (y / (side / 2)) * 2 + (x / (side / 2)) == label % 4
            let noise = rng.uniform(i * side * side + p)
            pixels[i * side * side + p] = UInt8(min(255, (inSquare ? 140 : 20) + Int(noise * 100)))
        }
    }
    return (pixels, labels)
}

public func makeData(trainCount: Int = 240, testCount: Int = 60, side: Int = 12, classes: Int = 4) -> TrainingData {
    let tr = syntheticPixels(count: trainCount, side: side, classes: classes, seed: 1)
    let te = syntheticPixels(count: testCount, side: side, classes: classes, seed: 2)
    let norm: (UInt8) -> Float = { (Float($0) / 255 - 0.3) / 0.3 }
    let train = ImageDataset(name: "train", sampleShape: [1, side, side], classes: classes,
                             pixels: tr.pixels.map(norm), labels: tr.labels.map { Int32($0) })
    let test = ImageDataset(name: "test", sampleShape: [1, side, side], classes: classes,
                            pixels: te.pixels.map(norm), labels: te.labels.map { Int32($0) })
    return TrainingData(train: train, test: test, padValue: -1)
}

/// Writes the synthetic set as IDX files (`train-*`, `t10k-*`) into a new temporary directory.
public func writeIDXDirectory(trainCount: Int = 240, testCount: Int = 60, side: Int = 12, classes: Int = 4) throws -> String {
    let dir = NSTemporaryDirectory() + "lockstep-idx-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    for (split, count, seed) in [("train", trainCount, UInt64(1)), ("t10k", testCount, UInt64(2))] {
        let d = syntheticPixels(count: count, side: side, classes: classes, seed: seed)
        func be(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
        let images = [0, 0, 8, 3] + be(count) + be(side) + be(side) + d.pixels
        let labels = [0, 0, 8, 1] + be(count) + d.labels
        try Data(images).write(to: URL(fileURLWithPath: "\(dir)/\(split)-images-idx3-ubyte"))
        try Data(labels).write(to: URL(fileURLWithPath: "\(dir)/\(split)-labels-idx1-ubyte"))
    }
    return dir
}

/// A small CNN with every layer family that has distributed behaviour (SyncBN in 4-D and 2-D,
/// dropout), trained with SGD + momentum.
public func smallCNNConfig(dataPath: String = "/nonexistent", extra: String = "") -> String {
    """
    name: small-cnn
    data:
      path: \(dataPath)
      classes: 4
      augment: {horizontal_flip: true, crop_padding: 1}
    model:
      - conv: {out: 4, kernel: 3, padding: 1, bias: false}
      - batchnorm: {}
      - relu
      - maxpool: {size: 2}
      - flatten
      - dense: {out: 16}
      - batchnorm: {}
      - relu
      - dropout: {p: 0.25}
      - dense: {out: 4}
    optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}
    schedule: {name: cosine, warmup_epochs: 0.1}
    train: {epochs: 1, max_steps: 8, global_batch: 24, seed: 3, log_every: 0}
    \(extra)
    """
}

/// A new empty directory under the temporary directory.
public func makeTempDir(_ prefix: String = "lockstep-test") -> String {
    let d = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

/// The directory of the test bundle, where SwiftPM also puts the `lockstep` executable.
public func buildProductsDirectory() -> URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

/// Running the lockstep binary (alone or under mpirun) from tests.
public struct CLI {
    public struct Run { public var status: Int32; public var output: String; public var seconds: Double }

    public init() {}

    /// Starts `/usr/bin/env arguments...` with the MPI-as-root and one-BLAS-thread environment.
    public func start(_ arguments: [String], environment extra: [String: String] = [:]) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OPENBLAS_NUM_THREADS"] = "1"
        for (k, v) in extra { env[k] = v }
        p.environment = env
        // A fresh working directory, so that runs without output.dir put their runs/ there and
        // not in the checkout.
        let cwd = NSTemporaryDirectory() + "lockstep-cwd-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        return (p, pipe)
    }

    public func run(_ arguments: [String], environment extra: [String: String] = [:], timeout: Double = 120) throws -> Run {
        let start = Date()
        let (p, pipe) = try self.start(arguments, environment: extra)
        let deadline = Date().addingTimeInterval(timeout)
        // The output is read on another thread (a full pipe would block the child) and handed
        // over through the semaphore.
        final class Output: @unchecked Sendable { var data = Data() }
        let output = Output()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue(label: "reader").async { output.data = pipe.fileHandleForReading.readDataToEndOfFile(); done.signal() }
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning { p.terminate(); XCTFail("timed out after \(timeout) s: \(arguments)") }
        p.waitUntilExit()
        done.wait()
        return Run(status: p.terminationStatus, output: String(decoding: output.data, as: UTF8.self),
                   seconds: Date().timeIntervalSince(start))
    }

    public var lockstep: String { buildProductsDirectory().appendingPathComponent("lockstep").path }

    public func requireMPI() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/mpirun") else { throw XCTSkip("mpirun not installed") }
        guard FileManager.default.isExecutableFile(atPath: lockstep) else { throw XCTSkip("\(lockstep) not built") }
    }

    public func writeConfig(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "lockstep-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    public func mpirun(_ ranks: Int, _ args: [String], tcp: Bool = false, env: [String: String] = [:], timeout: Double = 120) throws -> Run {
        var a = ["mpirun", "-np", "\(ranks)", "--oversubscribe", "--bind-to", "none"]
        if tcp { a += ["--mca", "btl", "tcp,self"] }
        for k in env.keys.sorted() { a += ["-x", k] }
        return try run(a + [lockstep] + args, environment: env, timeout: timeout)
    }

    /// The parameters printed by `lockstep train --dump-parameters`.
    public func parameters(_ output: String) -> [Float] {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("parameters:") }) else { return [] }
        return line.dropFirst("parameters:".count).split(separator: " ").compactMap { Float($0) }
    }

}

/// Every tensor of a run's step-50 checkpoint (parameters, buffers, optimizer state) as bits.
public func checkpointBits(_ runDir: String) throws -> [String: [UInt32]] {
    let f = try SafeTensorsFile.read(path: runDir + "/ckpt-step00000050.safetensors")
    var out: [String: [UInt32]] = [:]
    for e in f.entries { out[e.name] = f.values(e).map(\.bitPattern) }
    return out
}

/// The repository root, found from this file's path (Tests/TrainingTestSupport/Fixtures.swift).
public let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A small MLP trained with Adam: dense layers dominate, as in configs/fmnist-mlp.yaml.
public func smallMLPConfig(extra: String = "") -> String {
    """
    name: small-mlp
    data: {path: /nonexistent, classes: 4}
    model:
      - flatten
      - dense: {out: 32}
      - batchnorm: {}
      - relu
      - dense: {out: 4}
    optimizer: {name: adam, lr: 0.003}
    train: {epochs: 5, max_steps: 50, global_batch: 24, seed: 3, log_every: 0}
    \(extra)
    """
}

/// Two Gaussian-ish blobs in 3 features (deterministic), written as train.csv and test.csv
/// with an integer label column and one-hot columns.
public func writeTabularTables() throws -> String {
    let dir = makeTempDir("lockstep-tabular")
    for (name, count, offset) in [("train.csv", 96, 0), ("test.csv", 32, 1000)] {
        var text = "x,y,z,label,is0,is1\n"
        for i in 0..<count {
            let label = i % 2, k = Double(i + offset)
            let x = (label == 0 ? -1.0 : 1.0) + 0.8 * sin(k * 1.7), y = 3 + cos(k * 0.9), z = Double(label) + 0.5 * sin(k * 2.3)
            text += "\(x),\(y),\(z),\(label),\(label == 0 ? 1 : 0),\(label)\n"
        }
        try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
    }
    return dir
}

public func tabularConfig(_ dir: String, labels: String) -> String {
    """
    data: {format: csv, path: \(dir), classes: 2, \(labels)}
    model:
      - dense: {out: 8}
      - relu
      - dense: {out: 2}
    optimizer: {name: adam, lr: 0.01}
    train: {epochs: 3, global_batch: 16, exact: true, chunk: 4, log_every: 0}
    """
}
