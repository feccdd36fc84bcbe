// RGB data end to end: a small conv net on synthetic CIFAR-10 binary batches (3×32×32), with
// flips, crops and erasing on three channels, gives the same bits on 1 and 2 ranks.
import Collectives
import Configuration
import Datasets
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class CIFARTrainingTests: XCTestCase {
    /// Batches where class k (of 4) brightens channel k % 3 in one quadrant, on noise.
    func writeBatches(records: Int) throws -> String {
        let dir = makeTempDir("lockstep-cifar")
        for (f, name) in (CIFAR10.trainFiles + CIFAR10.testFiles).enumerated() {
            var bytes = [UInt8]()
            for r in 0..<records {
                let label = (r + f) % 4
                bytes.append(UInt8(label))
                for c in 0..<3 {
                    for p in 0..<1024 {
                        let y = p / 32, x = p % 32, quadrant = (y / 16) * 2 + x / 16
                        let lit = c == label % 3 && quadrant == label
                        bytes.append(UInt8(truncatingIfNeeded: (lit ? 150 : 30) + (p * 7 + r * 13 + c * 5) % 60))
                    }
                }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + name))
        }
        return dir
    }

    func testRGBTrainingIsExactAcrossRanks() throws {
        let dir = try writeBatches(records: 24)
        let yaml = """
            data:
              format: cifar10
              path: \(dir)
              classes: 4
              augment: {horizontal_flip: true, crop_padding: 2, erasing: {p: 0.5}}
            model:
              - conv: {out: 8, kernel: 3, padding: 1, bias: false}
              - batchnorm: {}
              - relu
              - maxpool: {size: 4}
              - conv: {out: 8, kernel: 3, stride: 2, padding: 1}
              - relu
              - global_avgpool
              - dense: {out: 4}
            optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
            train: {epochs: 2, global_batch: 24, exact: true, chunk: 4, log_every: 0}
            """
        let config = try TrainingConfig.parse(yaml: yaml, file: "cifar.yaml")
        let data = try TrainingData.load(config)
        XCTAssertEqual(data.train.sampleShape, [3, 32, 32])
        XCTAssertEqual(data.train.count, 120, "five training batches of 24 records")
        func train(_ ranks: Int) throws -> (loss: Double, state: [UInt32]) {
            try ThreadCommunicator.run(size: ranks) { comm in
                let t = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
                let h = try t.run()
                return (h.last!.trainLoss, stateBits(t))
            }[0]
        }
        let one = try train(1), two = try train(2)
        XCTAssertTrue(one.loss.isFinite)
        XCTAssertEqual(one.loss.bitPattern, two.loss.bitPattern)
        XCTAssertEqual(one.state, two.state)
    }
}
