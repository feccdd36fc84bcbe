// End-to-end runs of the lockstep binary under mpirun.
import Foundation
import XCTest

final class MPIIntegrationTests: XCTestCase {
    struct Run { var status: Int32; var output: String; var seconds: Double }

    func run(_ arguments: [String], environment extra: [String: String] = [:], timeout: Double = 120) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OPENBLAS_NUM_THREADS"] = "1"
        for (k, v) in extra { env[k] = v }
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        let start = Date()
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        var data = Data()
        let reader = DispatchQueue(label: "reader")
        let done = DispatchSemaphore(value: 0)
        reader.async { data = pipe.fileHandleForReading.readDataToEndOfFile(); done.signal() }
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning { p.terminate(); XCTFail("timed out after \(timeout) s: \(arguments)") }
        p.waitUntilExit()
        done.wait()
        return Run(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self),
                   seconds: Date().timeIntervalSince(start))
    }

    var lockstep: String { buildProductsDirectory().appendingPathComponent("lockstep").path }

    func requireMPI() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/mpirun") else { throw XCTSkip("mpirun not installed") }
        guard FileManager.default.isExecutableFile(atPath: lockstep) else { throw XCTSkip("\(lockstep) not built") }
    }

    func writeConfig(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "lockstep-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func mpirun(_ ranks: Int, _ args: [String], tcp: Bool = false, env: [String: String] = [:], timeout: Double = 120) throws -> Run {
        var a = ["mpirun", "-np", "\(ranks)", "--oversubscribe", "--bind-to", "none"]
        if tcp { a += ["--mca", "btl", "tcp,self"] }
        for k in env.keys.sorted() { a += ["-x", k] }
        return try run(a + [lockstep] + args, environment: env, timeout: timeout)
    }

    /// The parameters printed by `lockstep train --dump-parameters`.
    func parameters(_ output: String) -> [Float] {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("parameters:") }) else { return [] }
        return line.dropFirst("parameters:".count).split(separator: " ").compactMap { Float($0) }
    }

    func testWorldSizeInvarianceUnderMPI() throws {
        try requireMPI()
        let dir = try writeIDXDirectory()
        let config = try writeConfig(smallCNNConfig(dataPath: dir))
        let single = try run([lockstep, "train", "--config", config, "--dump-parameters"])
        XCTAssertEqual(single.status, 0, single.output)
        let reference = parameters(single.output)
        XCTAssertFalse(reference.isEmpty, single.output)
        for (ranks, tcp) in [(2, false), (4, false), (2, true)] {
            let r = try mpirun(ranks, ["train", "--config", config, "--dump-parameters"], tcp: tcp)
            XCTAssertEqual(r.status, 0, r.output)
            let p = parameters(r.output)
            XCTAssertEqual(p.count, reference.count, r.output)
            guard p.count == reference.count else { continue }
            let maxAbs = reference.map(abs).max()!
            let diff = zip(p, reference).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(diff / maxAbs, 1e-5, "\(ranks) ranks (tcp \(tcp)) differ from 1 rank by \(diff / maxAbs)")
        }
        // Local BN at 2 ranks differs measurably.
        let local = try mpirun(2, ["train", "--config", config, "--dump-parameters", "--bn", "local"])
        XCTAssertEqual(local.status, 0, local.output)
        let lp = parameters(local.output)
        XCTAssertEqual(lp.count, reference.count)
        if lp.count == reference.count {
            let diff = zip(lp, reference).map { abs($0 - $1) }.max()!
            XCTAssertGreaterThan(diff / reference.map(abs).max()!, 1e-3)
        }
    }

    func testAFailingRankEndsTheWholeJobQuickly() throws {
        try requireMPI()
        let dir = try writeIDXDirectory()
        let config = try writeConfig(smallCNNConfig(dataPath: dir, extra: "").replacingOccurrences(of: "max_steps: 8", with: "max_steps: 1000").replacingOccurrences(of: "epochs: 1", with: "epochs: 100"))
        let r = try mpirun(2, ["train", "--config", config], env: ["LOCKSTEP_FAULT_RANK": "1", "LOCKSTEP_FAULT_STEP": "3"], timeout: 60)
        XCTAssertNotEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("rank 1: injected fault at step 3"), r.output)
        XCTAssertLessThan(r.seconds, 10, "the job took \(r.seconds) s to stop")
    }

    func testDataMissingOnOneRankIsAClearError() throws {
        try requireMPI()
        let config = try writeConfig(smallCNNConfig(dataPath: "/nonexistent/lockstep-data"))
        let r = try mpirun(2, ["train", "--config", config], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.output.contains("/nonexistent/lockstep-data: missing train-images-idx3-ubyte"), r.output)
        XCTAssertLessThan(r.seconds, 10)
    }

    func testBadConfigKeyFailsOnEveryRankWithOneLine() throws {
        try requireMPI()
        let config = try writeConfig(smallCNNConfig().replacingOccurrences(of: "max_steps: 8", with: "max_step: 8"))
        let r = try mpirun(2, ["train", "--config", config], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.output.contains("unknown key 'train.max_step'"), r.output)
        let single = try run([lockstep, "train", "--config", config])
        XCTAssertNotEqual(single.status, 0)
        XCTAssertTrue(single.output.contains("unknown key 'train.max_step'"), single.output)
    }
}
