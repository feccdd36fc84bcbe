// What a Swift program gets from the library besides the CLI: a config and model built in code,
// its own Dataset, and the trainer's step and epoch callbacks (examples/spirals uses them all;
// examples/run checks its bits across ranks).
import Collectives
import Configuration
import Datasets
import Formats
import NN
@testable import Training
import TrainingTestSupport
import XCTest

final class LibraryTests: XCTestCase {
    /// XOR-like quadrants: label 1 where x·y > 0.
    struct Quadrants: Dataset {
        let count: Int
        var sampleShape: [Int] { [2] }
        var classes: Int { 2 }
        func sample(_ index: Int, into features: UnsafeMutableBufferPointer<Float>) -> Int {
            let x = Float(index % 17) / 8 - 1, y = Float(index % 13) / 6 - 1
            features[0] = x; features[1] = y
            return x * y > 0 ? 1 : 0
        }
    }

    func testACodeBuiltRunCallsBackEveryStepAndEpoch() throws {
        var config = TrainingConfig()
        config.name = "quadrants"
        config.data.classes = 2
        config.model = [.dense(out: 16, bias: true, initializer: nil), .relu, .dense(out: 2, bias: true, initializer: nil)]
        config.optimizer.kind = .adam
        config.optimizer.learningRate = 0.01
        config.train.epochs = 3
        config.train.globalBatch = 32
        config.train.logEvery = 0
        let data = try TrainingData(train: Quadrants(count: 256), test: Quadrants(count: 64))
        let results = try ThreadCommunicator.run(size: 2) { comm -> ([StepEnd], [EpochMetrics]) in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            var steps: [StepEnd] = [], epochs: [EpochMetrics] = []
            trainer.onStep = { steps.append($0) }
            trainer.onEpoch = { epochs.append($0) }
            try trainer.run()
            return (steps, epochs)
        }
        for (steps, epochs) in results {
            XCTAssertEqual(steps.map(\.step), Array(1...24), "256 samples / 32 = 8 steps, 3 epochs")
            XCTAssertEqual(steps.map(\.epoch), (1...3).flatMap { Array(repeating: $0, count: 8) })
            XCTAssertEqual(epochs.map(\.epoch), [1, 2, 3])
            XCTAssertEqual(epochs.last?.testSamples, 64)
        }
        // Each rank's callback sees its share of every global batch of 32: in exact mode (the
        // default) rank 0 carries the exact global sums and the others zeros, so the shares add
        // up to the batch however the samples were split.
        XCTAssertEqual(zip(results[0].0, results[1].0).map { $0.samples + $1.samples }, Array(repeating: 32, count: 24))
        XCTAssertEqual(results[0].1.map(\.trainLoss), results[1].1.map(\.trainLoss), "epoch metrics are global")
    }

    func testSplitsOfDifferentShapesAreRefused() {
        struct Wide: Dataset {
            var count: Int { 4 }
            var sampleShape: [Int] { [3] }
            var classes: Int { 2 }
            func sample(_ index: Int, into features: UnsafeMutableBufferPointer<Float>) -> Int { index % 2 }
        }
        XCTAssertThrowsError(try TrainingData(train: Quadrants(count: 8), test: Wide())) { error in
            XCTAssertTrue("\(error)".contains("test split's samples are [3]"), "\(error)")
        }
    }
}
