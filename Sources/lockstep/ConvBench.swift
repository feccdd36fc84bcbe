// `lockstep bench-conv`: each convolution of a config timed alone under every algorithm that
// applies (Benchmarks' ConvBenchmark), with the choice `conv.algorithm: auto` makes.
import ArgumentParser
import Benchmarks
import Collectives
import Configuration
import Foundation
import NN
import TensorCore
import Training

struct BenchConv: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-conv",
        abstract: "Time each convolution of a config under im2col + GEMM and Winograd F(2,3) / F(4,3).")
    @Option(help: "The training config (YAML).") var config: String
    @Option(name: .customLong("set"), help: "Override a config key, e.g. --set train.global_batch=64 (repeatable).") var overrides: [String] = []
    @Option(help: "Interleaved rounds per layer (medians reported).") var rounds = 5

    func run() throws {
        let config = try TrainingConfig.load(path: config, overrides: overrides)
        setBLASThreadCount(1)
        let inputShape = try SharedData().get(config).train.sampleShape
        let builder = ModelBuilder(batchNormMode: .local, communicator: SingleProcessCommunicator(), convAlgorithm: config.conv.algorithm)
        let convs = convolutions(in: try builder.layers(config.model, inputShape: inputShape))
        let batch = config.train.globalBatch, chunk = config.train.exactChunk
        print("bench-conv \(config.name): batch \(batch), \(chunk.map { "exact mode, chunks of \($0)" } ?? "float sums"), 1 BLAS thread")
        print("OpenBLAS: \(blasConfiguration()); CKernels: \(kernelLevelName())")
        var rows: [[ConvTiming]] = [], auto: [String: Int?] = [:]
        for conv in convs {
            auto[conv.name] = conv.winogradTile
            var timings: [ConvTiming] = []
            for algorithm in [ConvAlgorithm.direct, .winogradF2, .winograd] {
                guard let t = try? timeConvolution(conv, algorithm: algorithm, batch: batch, chunk: chunk, rounds: rounds) else { continue }
                timings.append(t)
            }
            rows.append(timings)
        }
        print(convBenchmarkReport(rows, auto: auto))
    }
}
