// A run from start to end without spawning the binary: where it writes, resuming with
// --resume auto or a path, and the metrics it leaves.
import Collectives
import Configuration
import Formats
import Foundation
import Launch
import Reports
@testable import Training
import TrainingTestSupport
import XCTest

final class RunLifecycleTests: XCTestCase {
    func tempDir() -> String { makeTempDir("lockstep-life") }

    /// 2 epochs of 10 steps with a checkpoint every 3 steps, no output.dir (runs go under a root);
    /// exact mode, so that even the epoch's train-loss sums continue bit for bit.
    func config() throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: smallCNNConfig(), file: "small.yaml",
                                 overrides: ["train.max_steps=0", "train.epochs=2", "checkpoint.every_steps=3",
                                             "train.exact=true", "train.chunk=4"])
    }

    func testPlanForAFreshRunAutoAndAPath() throws {
        let root = tempDir()
        let fresh = RunDirectory.plan(name: "net", outputDir: nil, resume: nil, runsRoot: root)
        XCTAssertTrue(fresh.directory.hasPrefix(root + "/net-"), fresh.directory)
        XCTAssertNil(fresh.checkpoint)
        let nothing = RunDirectory.plan(name: "net", outputDir: root + "/x", resume: "auto", runsRoot: root)
        XCTAssertEqual(nothing.directory, root + "/x")
        XCTAssertNil(nothing.checkpoint)
        XCTAssertTrue(nothing.note?.contains("found no checkpoint") ?? false)
        let path = RunDirectory.plan(name: "net", outputDir: nil, resume: "/data/run7/ckpt-step00000009.safetensors", runsRoot: root)
        XCTAssertEqual(path, RunPlan(directory: "/data/run7", checkpoint: "/data/run7/ckpt-step00000009.safetensors", note: nil))
    }

    func testResumeAutoContinuesTheStoppedRunBitForBit() throws {
        let data = makeData()
        let cfg = try config()
        func train(root: String, resume: String?, stopAt: Int?) throws -> (state: [UInt32], plan: RunPlan?, history: [EpochMetrics]) {
            try ThreadCommunicator.run(size: 2) { comm -> ([UInt32], RunPlan?, [EpochMetrics]) in
                let trainer = try Trainer(config: cfg, communicator: comm, data: data, console: Console(isEnabled: false))
                trainer.stopAtStep = stopAt
                do {
                    let r = try trainer.run(resume: resume, runsRoot: root)
                    return (stateBits(trainer), r.plan, r.history)
                } catch is Preempted {
                    return (stateBits(trainer), nil, [])
                }
            }[0]
        }
        let full = try train(root: tempDir(), resume: nil, stopAt: nil)
        let root = tempDir()
        _ = try train(root: root, resume: nil, stopAt: 7)   // stops mid-epoch 0 after a checkpoint
        let resumed = try train(root: root, resume: "auto", stopAt: nil)
        let plan = try XCTUnwrap(resumed.plan)
        XCTAssertTrue(plan.checkpoint?.hasSuffix("ckpt-step00000007.safetensors") ?? false, "\(plan)")
        XCTAssertTrue(plan.directory.hasPrefix(root + "/small-cnn-"), plan.directory)
        XCTAssertEqual(resumed.state, full.state, "resumed run must equal the uninterrupted one bit for bit")
        // The resumed epoch continues the stopped one's train sums, so its metrics match too.
        XCTAssertEqual(resumed.history.map(\.trainLoss), full.history.map(\.trainLoss))
        // metrics.jsonl decodes into the same records the trainer produced (one schema), after
        // the stopped run's partial epoch (which logged no epoch line).
        let logged = try RunMetrics.load(plan.directory).epochs
        XCTAssertEqual(logged.map(\.testLoss), resumed.history.map(\.testLoss))
        XCTAssertEqual(logged.map(\.trainAccuracy), resumed.history.map(\.trainAccuracy))
    }
}
