// compare-bn as a study: the interval arithmetic against hand-computed values, batch norm
// replaced by the communication-free norms, a grid of tiny runs that writes its summary, and an
// interrupted grid that resumes without re-running finished runs; bad arguments.
import Collectives
import Configuration
import Foundation
import NN
@testable import Studies
@testable import Training
import TrainingTestSupport
import XCTest

final class BNStudyTests: XCTestCase {
    func testIntervalsByHand() {
        // mean 0.92, sd 0.02; t(0.975, 2) = 4.303, half-width 4.303 · 0.02/√3 = 0.0496868.
        let m = MeanInterval([0.90, 0.92, 0.94])
        XCTAssertEqual(m.mean, 0.92, accuracy: 1e-12)
        XCTAssertEqual(m.standardDeviation, 0.02, accuracy: 1e-12)
        XCTAssertEqual(m.lower!, 0.92 - 0.0496868, accuracy: 1e-6)
        XCTAssertEqual(m.upper!, 0.92 + 0.0496868, accuracy: 1e-6)
        // Paired: differences 0.01, 0.02, 0.01: mean 0.013333, sd 0.0057735, half 0.0143434.
        let d = MeanInterval.pairedDifference([0.93, 0.94, 0.95], [0.92, 0.92, 0.94])
        XCTAssertEqual(d.mean, 0.0133333, accuracy: 1e-6)
        XCTAssertEqual(d.standardDeviation, 0.0057735, accuracy: 1e-6)
        XCTAssertEqual(d.lower!, 0.0133333 - 0.0143434, accuracy: 1e-6)
        XCTAssertNil(MeanInterval([0.5]).lower, "one value has no interval")
        XCTAssertEqual(MeanInterval.t975(degreesOfFreedom: 1), 12.706)
        XCTAssertEqual(MeanInterval.t975(degreesOfFreedom: 60), 1.96)
    }

    func testBatchNormIsReplacedEverywhere() {
        let specs: [LayerSpec] = [.conv(out: 8, kernel: 3, stride: 1, padding: 1, bias: false, initializer: nil), .batchNorm(momentum: 0.1, epsilon: 1e-5),
                                  .residual(layers: [.batchNorm(momentum: 0.1, epsilon: 1e-3)], projection: .auto)]
        let g = BNStudy.replacingBatchNorm(specs, with: "groupnorm", groups: 4)
        XCTAssertEqual(g[1], .groupNorm(groups: 4, epsilon: 1e-5, kind: "groupnorm"))
        XCTAssertEqual(g[2], .residual(layers: [.groupNorm(groups: 4, epsilon: 1e-3, kind: "groupnorm")], projection: .auto))
        XCTAssertEqual(BNStudy.replacingBatchNorm(specs, with: "layernorm", groups: 4)[1], .groupNorm(groups: 1, epsilon: 1e-5, kind: "layernorm"))
    }

    func testExactChunksDivideThePerRankBatch() throws {
        // Chunks of 16 with 4 samples per rank would give rank 1 of 2 no sample at all (local BN
        // then has no statistics): the study shrinks the chunk to a divisor of the per-rank batch.
        let configPath = try CLI().writeConfig(smallCNNConfig(extra: "").replacingOccurrences(of: "log_every: 0}", with: "log_every: 0, exact: true, chunk: 16}"))
        let base = try TrainingConfig.load(path: configPath)
        let study = try BNStudy(variants: ["sync", "local"], perRankBatches: [4, 6, 32], seeds: [0], groups: 2, root: makeTempDir())
        let chunks = try study.runs.map { try study.config(for: $0, base: base, ranks: 2, overrides: [], path: configPath).train.chunk }
        XCTAssertEqual(chunks, [4, 4, 2, 2, 16, 16])   // gcd(4, 16), gcd(6, 16), 16 divides 32
    }

    func testRunsUseFullBatchesAndLocalBNSurvivesARankWithoutSamples() throws {
        let configPath = try CLI().writeConfig(smallMLPConfig())
        let base = try TrainingConfig.load(path: configPath)
        let study = try BNStudy(variants: ["local"], perRankBatches: [4], seeds: [0], groups: 2, root: makeTempDir())
        XCTAssertTrue(try study.config(for: study.runs[0], base: base, ranks: 2, overrides: [], path: configPath).data.dropLast)
        // A global batch of 8 in chunks of 4 on 3 ranks: rank 2 holds no samples in any step.
        // Local BN there has nothing to normalise; it must not stop the job (it did: "got 0").
        let config = try TrainingConfig.parse(yaml: smallMLPConfig(), file: "local.yaml",
                                              overrides: ["bn.mode=local", "train.exact=true", "train.chunk=4", "train.global_batch=8", "train.max_steps=6"])
        let data = makeData()
        let steps = try ThreadCommunicator.run(size: 3) { comm -> Int in
            let trainer = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            try trainer.run()
            return trainer.step
        }
        XCTAssertEqual(steps, [6, 6, 6])
    }

    func testSyncBNCostIsAPairedDifferenceWithItsInterval() throws {
        let study = try BNStudy(variants: ["sync", "local"], perRankBatches: [4], seeds: [0, 1, 2], groups: 2, root: "/tmp")
        // Collective ms per step by seed: sync 3.0/3.2/3.1, local 2.8/3.1/2.9 → differences
        // 0.2/0.1/0.2: mean 0.1667, sd 0.0577, t(0.975, 2) = 4.303, half-width 0.1434 ms.
        let comm: [String: [Double]] = ["sync": [3.0, 3.2, 3.1], "local": [2.8, 3.1, 2.9]]
        let outcomes = study.runs.map { r in
            BNStudy.Outcome(run: r, accuracy: 0.9, secondsPerStep: 0.030, communicationPerStep: comm[r.variant]![r.seed] / 1000)
        }
        let text = study.summary(outcomes, setting: "test").markdown
        XCTAssertTrue(text.contains("per-rank batch 4: sync BN's extra collectives cost 0.17 ms per step [95% interval +0.02, +0.31], 0.6% of its step."), text)
    }

    func testScaledLearningRateFollowsTheGlobalBatch() throws {
        let configPath = try CLI().writeConfig(smallCNNConfig(extra: ""))
        let base = try TrainingConfig.load(path: configPath)
        var study = try BNStudy(variants: ["sync"], perRankBatches: [2, 8], seeds: [0], groups: 2, root: makeTempDir())
        let plain = try study.runs.map { try study.config(for: $0, base: base, ranks: 4, overrides: [], path: configPath).optimizer.learningRate }
        XCTAssertEqual(plain, [base.optimizer.learningRate, base.optimizer.learningRate])
        study.scaleLearningRate = true
        let scaled = try study.runs.map { try study.config(for: $0, base: base, ranks: 4, overrides: [], path: configPath).optimizer.learningRate }
        // Global batches 8 and 32 against the config's own: the ratio is exact in binary only
        // up to one rounding of the product and one of the YAML round trip, hence 1e-12.
        XCTAssertEqual(scaled[0], base.optimizer.learningRate * 8 / Double(base.train.globalBatch), accuracy: 1e-12)
        XCTAssertEqual(scaled[1], base.optimizer.learningRate * 32 / Double(base.train.globalBatch), accuracy: 1e-12)
    }

    func testATinyGridWritesItsSummaryAndResumes() throws {
        let data = try writeIDXDirectory(), root = makeTempDir("lockstep-study")
        let configPath = try CLI().writeConfig(smallCNNConfig(dataPath: data))
        let study = try BNStudy(variants: ["sync", "local", "groupnorm"], perRankBatches: [4, 8], seeds: [3, 4], groups: 2, root: root)
        XCTAssertEqual(study.runs.count, 12)
        let shared = try TrainingData.load(try TrainingConfig.load(path: configPath))
        func execute() throws -> [BNStudy.Outcome] {
            try ThreadCommunicator.run(size: 2) { comm in
                try study.execute(configPath: configPath, overrides: ["train.max_steps=3", "train.epochs=1"], communicator: comm,
                                  data: { _ in shared }, console: Console(isEnabled: false))
            }[0]
        }
        let first = try execute()
        XCTAssertEqual(first.count, 12)
        XCTAssertTrue(first.allSatisfy { $0.accuracy >= 0 && $0.accuracy <= 1 })
        let summary = study.summary(first, setting: "2 simulated ranks (threads) sharing 2 core(s)")
        XCTAssertTrue(summary.markdown.contains("| 4 | groupnorm | 2 |"), summary.markdown)
        XCTAssertTrue(summary.markdown.contains("sync − local"), summary.markdown)
        XCTAssertTrue(summary.chart.svg.contains("sync 95% interval"))
        XCTAssertTrue(summary.chart.title.contains("sharing 2 core(s)"), "the plot says how the runs shared the machine")
        // The global batch of each run is per-rank batch × ranks.
        let config = try TrainingConfig.load(path: "\(root)/local/b8/seed-4/config.yaml")
        XCTAssertEqual(config.train.globalBatch, 16)
        XCTAssertEqual(config.bn.mode, .local)

        // Interrupt: one run loses its metrics. Resuming retrains that run only.
        let stamp = { (dir: String) in try FileManager.default.attributesOfItem(atPath: "\(dir)/metrics.jsonl")[.modificationDate] as? Date }
        let kept = "\(root)/sync/b4/seed-3", lost = "\(root)/groupnorm/b8/seed-4"
        let before = try stamp(kept)
        try FileManager.default.removeItem(atPath: "\(lost)/metrics.jsonl")
        usleep(20_000)
        let second = try execute()
        XCTAssertEqual(try stamp(kept), before, "a finished run is reused, not retrained")
        XCTAssertNotNil(try stamp(lost), "the interrupted run was trained again")
        XCTAssertEqual(second.map { $0.accuracy }, first.map { $0.accuracy }, "the same runs, the same results")
    }

    func testWallTimeEstimateIsPlausible() throws {
        let data = try writeIDXDirectory(), root = makeTempDir("lockstep-study-estimate")
        let configPath = try CLI().writeConfig(smallCNNConfig(dataPath: data))
        let study = try BNStudy(variants: ["sync", "local"], perRankBatches: [4], seeds: [0, 1], groups: 2, root: root)
        let shared = try TrainingData.load(try TrainingConfig.load(path: configPath))
        let base = try TrainingConfig.load(path: configPath, overrides: ["train.max_steps=6"])
        let seconds = try ThreadCommunicator.run(size: 2) { comm in
            try study.estimateSeconds(study.runs, probe: study.runs[0], base: base, configPath: configPath, overrides: ["train.max_steps=6"],
                                      communicator: comm, data: { _ in shared })
        }
        // Each rank times its own steps (rank 0 prints its figure). 4 runs of 6 steps of 8 samples
        // of this tiny model take milliseconds; the bounds only catch a unit mistake (a duration
        // in ms or µs taken for seconds), not speed.
        for s in seconds { XCTAssertTrue(s > 0 && s < 60, "\(s) s") }
    }

    func testBadStudyArguments() {
        for (make, part) in [({ try BNStudy(variants: ["sync", "batchrenorm"], perRankBatches: [4], seeds: [0], groups: 2, root: "/tmp") }, "unknown alternative 'batchrenorm'"),
                             ({ try BNStudy(variants: ["sync"], perRankBatches: [], seeds: [0], groups: 2, root: "/tmp") }, "--per-rank-batch"),
                             ({ try BNStudy(variants: ["sync"], perRankBatches: [4, 0], seeds: [0], groups: 2, root: "/tmp") }, "--per-rank-batch"),
                             ({ try BNStudy(variants: ["sync"], perRankBatches: [4], seeds: [], groups: 2, root: "/tmp") }, "--seeds")] as [(() throws -> BNStudy, String)] {
            XCTAssertThrowsError(try make()) { XCTAssertTrue("\($0)".contains(part), "\($0)") }
        }
    }

    func testBadCommandLineArguments() throws {
        let cli = CLI()
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let config = try cli.writeConfig(smallCNNConfig())
        for (args, part) in [(["--per-rank-batch", "2,x"], "--per-rank-batch"), (["--per-rank-batch", ""], "--per-rank-batch"),
                             (["--seeds", "0"], "--seeds"), (["--alternatives", "groupnorm,mish"], "unknown alternative 'mish'")] {
            let r = try cli.run([cli.lockstep, "compare-bn", "--config", config] + args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.output.contains(part), "\(args): \(r.output)")
        }
    }
}
