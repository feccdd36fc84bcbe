// The memory estimate (Training/MemoryPlan.swift): a model far too large is refused with one
// line before anything large is allocated, in the CLI too (also under an address-space limit);
// the estimate's parts follow the config (optimizer state, exact-mode slots, sharding, ranks).
import Collectives
import Configuration
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class MemoryPlanTests: XCTestCase {
    func config(_ model: String, _ overrides: [String] = []) throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: "name: m\ndata: {classes: 4}\nmodel: \(model)\noptimizer: {name: adam, lr: 0.001}\ntrain: {global_batch: 24}\n",
                                 file: "m.yaml", overrides: overrides)
    }

    func testTheEstimateFollowsTheConfig() throws {
        let data = makeData()
        let model = "[flatten, {dense: {out: 100}}, relu, {dense: {out: 4}}]"
        // Parameters: 1×12×12 → 100 → 4 (as makeData's samples), weights and biases.
        let p = 144 * 100 + 100 + 100 * 4 + 4
        let adam = try MemoryEstimate(config: config(model), data: data, worldSize: 1)
        XCTAssertEqual(adam.parts[0].1, 8 * p, "values and gradients")
        XCTAssertEqual(adam.parts[1].1, 8 * p, "Adam keeps two moments")
        let sgd = try MemoryEstimate(config: config(model, ["optimizer.name=sgd", "optimizer.momentum=0.9"]), data: data, worldSize: 1)
        XCTAssertEqual(sgd.parts[1].1, 4 * p, "momentum SGD keeps one buffer")
        let sharded = try MemoryEstimate(config: config(model), data: data, worldSize: 4)
        XCTAssertEqual(sharded.parts[1].1, 8 * ((p + 3) / 4), "sharding keeps a quarter of the state per rank")
        // Exact mode: 24 samples in chunks of 4 are 6 chunks, one slot each on 1 rank for the
        // parameters dense weights leave (the biases: they sum their own chunks), no exchange.
        let exact = try MemoryEstimate(config: config(model, ["train.exact=true", "train.chunk=4"]), data: data, worldSize: 1)
        XCTAssertEqual(exact.parts[2].1, 4 * 6 * (100 + 4))
        // On 3 ranks: 2 chunks and one block each ([0,2), [2,4), [4,6)): slots for 2 chunks, rank
        // 0's block of p floats, and 3 blocks' segments of up to p/3 + 5 floats (the bound for
        // 4 layers' buckets).
        let three = try MemoryEstimate(config: config(model, ["train.exact=true", "train.chunk=4"]), data: data, worldSize: 3)
        XCTAssertEqual(three.parts[2].1, 4 * 2 * (100 + 4) + 4 * p * 1 + 4 * 3 * (p / 3 + 4 + 1))
        // Activations: the training batch's buffers (24 samples), less the first layer's unneeded
        // input gradient (flatten, first here, holds nothing and has none).
        XCTAssertEqual(adam.parts[3].1, 4 * 24 * ((100 + 144) + (100 + 100) + (4 + 100)))
        // Thread ranks share the data; MPI ranks on one host each hold a copy.
        XCTAssertEqual(adam.bytes(ranksInProcess: 3), adam.shared + 3 * adam.perRank)
        XCTAssertNoThrow(try adam.check(file: "m.yaml", ranksOnHost: 2, threadsShareProcess: false,
                                        limits: MemoryLimits(host: 2 * adam.bytes(ranksInProcess: 1), hostSource: "physical memory", process: nil)))
        XCTAssertThrowsError(try adam.check(file: "m.yaml", ranksOnHost: 2, threadsShareProcess: false,
                                            limits: MemoryLimits(host: 2 * adam.bytes(ranksInProcess: 1) - 1, hostSource: "physical memory", process: nil))) { error in
            XCTAssertTrue("\(error)".hasPrefix("m.yaml: 2 ranks on this host need about"), "\(error)")
        }
        XCTAssertThrowsError(try adam.check(file: "m.yaml", ranksOnHost: 1, threadsShareProcess: false,
                                            limits: MemoryLimits(host: 1 << 40, hostSource: "physical memory", process: 1 << 20))) { error in
            XCTAssertTrue("\(error)".contains("address-space limit"), "\(error)")
        }
    }

    /// The 627 GB model (784 × 2·10⁸ weights): one line, exit 1, fast, small, on 2 thread
    /// ranks in process and through the CLI with and without `prlimit --as=8GiB`.
    func testAModelTooLargeIsRefusedWithOneLine() throws {
        let huge = "[flatten, {dense: {out: 200000000}}, relu, {dense: {out: 4}}]"
        let data = makeData()
        let cfg = try config(huge)
        XCTAssertThrowsError(try ThreadCommunicator.run(size: 2) { comm in
            _ = try Trainer(config: cfg, communicator: comm, data: data, console: Console(isEnabled: false))
        }) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("m.yaml: 2 ranks on this host need about") && message.contains("TB"), message)
            XCTAssertFalse(message.contains("\n"), message)
        }
        let cli = CLI()
        let dataDir = try writeIDXDirectory()
        let file = try cli.writeConfig("name: huge\ndata: {path: \(dataDir), classes: 4}\nmodel: \(huge)\noptimizer: {name: adam, lr: 0.001}\ntrain: {global_batch: 24}\n")
        let out = makeTempDir("lockstep-huge")
        let prlimit = FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit") ? [["/usr/bin/prlimit", "--as=8589934592"]] : []
        // GNU time reports the peak RSS where it is installed (Debian's `time`).
        let time = FileManager.default.isExecutableFile(atPath: "/usr/bin/time") ? ["/usr/bin/time", "-f", "peak %M KB"] : []
        for prefix in [[]] + prlimit {
            let start = Date()
            let r = try cli.run(prefix + time + [cli.lockstep, "train", "--config", file, "--set", "output.dir=\(out)/run"])
            XCTAssertEqual(r.status, 1, r.output)
            XCTAssertLessThan(Date().timeIntervalSince(start), 10, "refused at once (2 s here; slack for a loaded CI machine)")
            let lines = r.output.split(separator: "\n").filter { !$0.hasPrefix("peak ") && !$0.hasPrefix("Command exited") }
            XCTAssertEqual(lines.count, 1, r.output)
            XCTAssertTrue(lines.first?.hasPrefix("rank 0: \(file): this run needs about") ?? false, r.output)
            if let kb = r.output.split(separator: "\n").first(where: { $0.hasPrefix("peak ") }).flatMap({ Int($0.split(separator: " ")[1]) }) {
                XCTAssertLessThan(kb, 500 * 1024, "below 500 MB resident")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(out)/run"), "nothing written")
        }
    }
}
