// The validation split and early stopping: a deterministic holdout of the training split, its
// metrics each epoch, the best model chosen on it, and stopping when it stops improving.
import Collectives
import Configuration
import Datasets
import Formats
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class ValidationTests: XCTestCase {
    func testTheHoldoutIsDeterministicDisjointAndKeyedBySeedOnly() {
        let a = GlobalBatchSampler.holdout(count: 240, fraction: 0.25, seed: 3)
        XCTAssertEqual(a.validation.count, 60)
        XCTAssertEqual(a.train.count, 180)
        XCTAssertTrue(Set(a.train).isDisjoint(with: a.validation))
        XCTAssertEqual(Set(a.train + a.validation), Set(0..<240))
        XCTAssertEqual(GlobalBatchSampler.holdout(count: 240, fraction: 0.25, seed: 3).validation, a.validation)
        XCTAssertNotEqual(GlobalBatchSampler.holdout(count: 240, fraction: 0.25, seed: 4).validation, a.validation)
        XCTAssertTrue(GlobalBatchSampler.holdout(count: 240, fraction: 0, seed: 3).validation.isEmpty)
    }

    func run(ranks: Int, _ overrides: [String]) throws -> (history: [EpochMetrics], state: [UInt32]) {
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "val.yaml",
                                              overrides: ["train.max_steps=0", "train.epochs=4", "data.validation_split=0.25",
                                                          "train.exact=true", "train.chunk=4"] + overrides)
        let data = makeData()
        return try ThreadCommunicator.run(size: ranks) { comm -> ([EpochMetrics], [UInt32]) in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            XCTAssertEqual(trainer.sampler.datasetSize, 180, "training draws only from the 180 samples not held out")
            return (try trainer.run(), stateBits(trainer))
        }[0]
    }

    func testValidationMetricsEachEpochWithTheSameBitsOnAnyWorldSize() throws {
        let one = try run(ranks: 1, [])
        XCTAssertEqual(one.history.count, 4)
        XCTAssertTrue(one.history.allSatisfy { $0.validationLoss != nil && $0.validationAccuracy != nil })
        XCTAssertTrue(one.history[0].consoleLine(epochs: 4).contains("val loss"))
        let three = try run(ranks: 3, [])
        XCTAssertEqual(three.history.map { $0.validationLoss!.bitPattern }, one.history.map { $0.validationLoss!.bitPattern })
        XCTAssertEqual(three.state, one.state)
    }

    func testEarlyStoppingStopsAndRestoresTheBestEpoch() throws {
        // min_delta so large that no epoch after the first counts as better: training stops after
        // epoch 1 + patience 2 = 3 epochs, with epoch 1's parameters put back.
        // A constant rate, so that epoch 1 is the same in a 1-epoch run.
        let stopped = try run(ranks: 2, ["train.early_stopping.patience=2", "train.early_stopping.min_delta=1000", "schedule.name=constant"])
        XCTAssertEqual(stopped.history.count, 3)
        let firstEpoch = try run(ranks: 2, ["train.epochs=1", "schedule.name=constant"])
        let parameterCount = stopped.state.count   // parameters + buffers + optimizer state
        XCTAssertGreaterThan(parameterCount, 0)
        // Parameters and buffers equal epoch 1's (the optimizer state is not restored).
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "val.yaml")
        let model = try Trainer(config: config, communicator: SingleProcessCommunicator(), data: makeData(), console: Console(isEnabled: false)).model
        let n = model.parameters.count + model.buffers.count
        let differing = zip(stopped.state.prefix(n), firstEpoch.state.prefix(n)).filter { $0 != $1 }.count
        XCTAssertEqual(differing, 0, "\(differing) of \(n) parameter and buffer values differ from epoch 1's")
        // Training did move on after epoch 1 (so the restore is what made them equal).
        XCTAssertNotEqual(stopped.history[2].trainLoss, stopped.history[0].trainLoss)
        // Without the split, early stopping is refused: it would select on the test set.
        XCTAssertThrowsError(try TrainingConfig.parse(yaml: smallCNNConfig(), file: "val.yaml", overrides: ["train.early_stopping.patience=2"])) {
            XCTAssertTrue("\($0)".contains("needs 'data.validation_split' > 0"), "\($0)")
        }
    }
    func testBestCheckpointIsTheEpochWithTheLowestValidationLoss() throws {
        let cli = CLI()
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let data = try writeIDXDirectory(), dir = makeTempDir()
        let config = try cli.writeConfig(smallCNNConfig(dataPath: data))
        let run = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)", "--set", "train.epochs=6",
                               "--set", "train.max_steps=0", "--set", "data.validation_split=0.25", "--set", "schedule.name=constant",
                               "--set", "optimizer.lr=0.3"])
        XCTAssertEqual(run.status, 0, run.output)
        let epochs = try String(contentsOfFile: "\(dir)/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["kind"] as? String == "epoch" }
        XCTAssertEqual(epochs.count, 6)
        let losses = epochs.map { $0["val_loss"] as! Double }
        let bestEpoch = epochs[losses.firstIndex(of: losses.min()!)!]["epoch"] as! Int
        let file = try SafeTensorsFile.read(path: "\(dir)/best.safetensors")
        // 180 training samples in batches of 24: 8 steps per epoch.
        XCTAssertEqual(file.metadata["step"], "\(bestEpoch * 8)", "val losses \(losses)")
    }
}
