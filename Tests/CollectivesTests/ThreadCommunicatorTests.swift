// ThreadCommunicator: collectives across N ranks as threads of one process, and its failure path.
import Collectives
import Foundation
import TestSupport
import XCTest

/// A value shared between threads; every access holds the lock.
final class LockedBox<T>: @unchecked Sendable {

    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        lock.lock(); defer { lock.unlock() }
        return stored
    }
    func update(_ change: (inout T) -> Void) {
        lock.lock(); defer { lock.unlock() }
        change(&stored)
    }
}

struct InjectedFailure: Error, CustomStringConvertible {
    let rank: Int
    var description: String { "injected failure on rank \(rank)" }
}

final class ThreadCommunicatorTests: XCTestCase {
    func testAStalledRankIsNamedWhenACollectiveTimesOut() throws {
        let start = Date()
        XCTAssertThrowsError(try ThreadCommunicator.run(size: 3) { comm -> Int in
            comm.collectiveTimeout = 0.5
            if comm.rank == 1 { Thread.sleep(forTimeInterval: 2); return 0 }   // never reaches the all-reduce
            var v = [1.0]
            try comm.allReduce(&v)
            return 0
        }) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("all-reduce (sum) of 1 Double values timed out after 0.5 s: rank 1 did not arrive"), message)
        }
        // The waiting ranks gave up after 0.5 s; run() itself returns when rank 1's 2 s are over.
        XCTAssertLessThan(Date().timeIntervalSince(start), 3.5)
    }

    /// Values that are exact multiples of 1/4 and small, so that every sum is exact whatever the order.
    static func value(rank: Int, index: Int) -> Double {
        let sign: Double = (index + rank) % 2 == 0 ? 1 : -1
        return sign * (Double(rank + 1) * Double(index + 1) * 0.25 + Double(rank))
    }

    static func expected(_ op: ReduceOp, size: Int, index: Int) -> Double {
        let values = (0..<size).map { value(rank: $0, index: index) }
        switch op {
        case .sum: return values.reduce(0, +)
        case .max: return values.max()!
        case .min: return values.min()!
        }
    }

    static let operations: [(ReduceOp, String)] = [(.sum, "sum"), (.max, "max"), (.min, "min")]

    func testAllReduceFloat() throws {
        for size in 1...4 {
            for length in [1, 3, 7] {   // 3 elements on 4 ranks: some ranks reduce no chunk
                for (op, name) in Self.operations {
                    let results = try ThreadCommunicator.run(size: size) { comm -> [Float] in
                        var buffer = (0..<length).map { Float(Self.value(rank: comm.rank, index: $0)) }
                        try comm.allReduce(&buffer, op: op)
                        return buffer
                    }
                    let expected = (0..<length).map { Float(Self.expected(op, size: size, index: $0)) }
                    XCTAssertEqual(results.count, size)
                    for (rank, result) in results.enumerated() {
                        XCTAssertEqual(result, expected, "Float \(name), \(size) ranks, length \(length), rank \(rank)")
                    }
                }
            }
        }
    }

    func testAllReduceDouble() throws {
        for size in 1...4 {
            for length in [1, 3, 7] {
                for (op, name) in Self.operations {
                    let results = try ThreadCommunicator.run(size: size) { comm -> [Double] in
                        var buffer = (0..<length).map { Self.value(rank: comm.rank, index: $0) }
                        try comm.allReduce(&buffer, op: op)
                        return buffer
                    }
                    let expected = (0..<length).map { Self.expected(op, size: size, index: $0) }
                    for (rank, result) in results.enumerated() {
                        XCTAssertEqual(result, expected, "Double \(name), \(size) ranks, length \(length), rank \(rank)")
                    }
                }
            }
        }
    }

    func testRepeatedAllReducesOfDifferentSizes() throws {
        // Back-to-back collectives of growing size must not read a scratch buffer another rank still uses.
        let results = try ThreadCommunicator.run(size: 3) { comm -> [Double] in
            var out = [Double]()
            for length in [1, 64, 2, 1000, 5] {
                var buffer = [Double](repeating: Double(comm.rank + 1), count: length)
                try comm.allReduce(&buffer, op: .sum)
                out.append(buffer.reduce(0, +))
            }
            return out
        }
        let expected: [Double] = [1, 64, 2, 1000, 5].map { Double($0) * 6 }
        for result in results { XCTAssertEqual(result, expected) }
    }

    func testRanksAndSize() throws {
        let results = try ThreadCommunicator.run(size: 4) { comm -> [Int] in [comm.rank, comm.size] }
        XCTAssertEqual(results, [[0, 4], [1, 4], [2, 4], [3, 4]])
    }

    func testBroadcastFromNonZeroRoot() throws {
        let results = try ThreadCommunicator.run(size: 3) { comm -> [Float] in
            var values: [Float] = comm.rank == 2 ? [1.5, -2, 3.25, 7] : [0, 0, 0, 0]
            try comm.broadcast(&values, root: 2)
            return values
        }
        for (rank, result) in results.enumerated() {
            XCTAssertEqual(result, [1.5, -2, 3.25, 7], "rank \(rank)")
        }
    }

    func testBroadcastIntegers() throws {
        let results = try ThreadCommunicator.run(size: 4) { comm -> [Int] in
            var values = [comm.rank * 100, comm.rank * 100 + 1]
            try comm.broadcast(&values, root: 1)
            return values
        }
        XCTAssertEqual(results, Array(repeating: [100, 101], count: 4))
    }

    func testBroadcastBytes() throws {
        let payload = Array("lockstep ✓ config".utf8)
        let results = try ThreadCommunicator.run(size: 3) { comm -> [UInt8] in
            try comm.broadcast(bytes: comm.rank == 1 ? payload : [], root: 1)
        }
        for (rank, result) in results.enumerated() { XCTAssertEqual(result, payload, "rank \(rank)") }

        let empty = try ThreadCommunicator.run(size: 2) { comm -> [UInt8] in
            try comm.broadcast(bytes: comm.rank == 0 ? [] : [9, 9, 9], root: 0)
        }
        XCTAssertEqual(empty, [[], []], "an empty payload from the root empties every rank's result")
    }

    func testBarrierWaitsForEveryRank() throws {
        let arrived = LockedBox(0)
        let seen = try ThreadCommunicator.run(size: 4) { comm -> Int in
            Thread.sleep(forTimeInterval: 0.02 * Double(comm.rank))   // later ranks arrive later
            arrived.update { $0 += 1 }
            try comm.barrier()
            return arrived.value
        }
        XCTAssertEqual(seen, [4, 4, 4, 4], "after the barrier every rank must see all four arrivals")
    }

    func testCheckSamePassesWhenEqual() throws {
        let results = try ThreadCommunicator.run(size: 3) { comm -> Bool in
            try comm.checkSame(0xDEAD_BEEF_0123_4567, what: "layout")
            return true
        }
        XCTAssertEqual(results, [true, true, true])
    }

    func testCheckSameFailsWhenOneRankDiffers() throws {
        // Differs only in the low 32 bits (the high halves agree).
        let messages = try ThreadCommunicator.run(size: 3) { comm -> String? in
            let fingerprint: UInt64 = comm.rank == 1 ? 0xDEAD_BEEF_0123_4568 : 0xDEAD_BEEF_0123_4567
            do {
                try comm.checkSame(fingerprint, what: "config fingerprint")
                return nil
            } catch let error as CollectiveError {
                return error.message
            }
        }
        for (rank, message) in messages.enumerated() {
            XCTAssertNotNil(message, "rank \(rank) must throw")
            XCTAssertTrue(message?.contains("config fingerprint") ?? false, "rank \(rank): \(message ?? "nil")")
        }
        // Without catching, run rethrows it.
        XCTAssertThrowsError(try ThreadCommunicator.run(size: 2) { comm -> Int in
            try comm.checkSame(comm.rank == 0 ? 1 << 40 : 2 << 40, what: "parameters")
            return 0
        }) { error in
            XCTAssertTrue(error is CollectiveError, "\(error)")
            XCTAssertTrue("\(error)".contains("parameters"), "\(error)")
        }
    }

    /// Runs `ThreadCommunicator.run` on a helper thread so that a hang fails the test instead of the suite.
    func runWithTimeout<R>(size: Int, seconds: Double, _ body: @escaping (ThreadCommunicator) throws -> R)
        -> (result: Result<[R], Error>?, elapsed: Double) {
        let done = DispatchSemaphore(value: 0)
        let outcome = LockedBox<Result<[R], Error>?>(nil)
        let start = Date()
        let thread = Thread {
            let r = Result<[R], Error> { try ThreadCommunicator.run(size: size, body) }
            outcome.update { $0 = r }
            done.signal()
        }
        thread.start()
        let timedOut = done.wait(timeout: .now() + seconds) == .timedOut
        let elapsed = Date().timeIntervalSince(start)
        if timedOut { return (nil, elapsed) }
        return (outcome.value, elapsed)
    }

    func checkFailingRank(size: Int, failingRank: Int, delayBeforeFailure: Double, line: UInt = #line) {
        let (outcome, elapsed) = runWithTimeout(size: size, seconds: 10) { comm -> Int in
            if comm.rank == failingRank {
                Thread.sleep(forTimeInterval: delayBeforeFailure)
                throw InjectedFailure(rank: comm.rank)
            }
            var buffer: [Float] = [1, 2, 3]
            try comm.allReduce(&buffer, op: .sum)   // never completes: one rank is missing
            try comm.barrier()
            return 1
        }
        guard let outcome else {
            XCTFail("ThreadCommunicator.run hung for \(elapsed) s after rank \(failingRank) threw", line: line)
            return
        }
        XCTAssertLessThan(elapsed, 5, "run must return promptly after a rank fails", line: line)
        switch outcome {
        case .success:
            XCTFail("run returned results although rank \(failingRank) threw", line: line)
        case .failure(let error):
            XCTAssertFalse(error is CollectiveError, "run must rethrow the root cause, got \(error)", line: line)
            guard let injected = error as? InjectedFailure else {
                XCTFail("expected InjectedFailure, got \(type(of: error)): \(error)", line: line)
                return
            }
            XCTAssertEqual(injected.rank, failingRank, line: line)
        }
    }

    func testFailureWhileOthersWaitInAllReduce() {
        // The failing rank throws after the others are already blocked in the all-reduce.
        checkFailingRank(size: 3, failingRank: 1, delayBeforeFailure: 0.2)
    }

    func testFailureBeforeOthersReachTheCollective() {
        checkFailingRank(size: 4, failingRank: 0, delayBeforeFailure: 0)
    }

    func testFailureOnLastRank() {
        checkFailingRank(size: 2, failingRank: 1, delayBeforeFailure: 0.05)
    }

    func testCollectiveAfterAbortThrows() throws {
        // A rank that enters a collective after another rank aborted must throw, not wait.
        let (outcome, elapsed) = runWithTimeout(size: 2, seconds: 10) { comm -> String in
            if comm.rank == 0 {
                comm.abort("stopping")
                return "aborted"
            }
            Thread.sleep(forTimeInterval: 0.1)
            do {
                try comm.barrier()
                return "passed the barrier"
            } catch let error as CollectiveError {
                return "threw: \(error.failedRank) \(error.message)"
            }
        }
        guard let outcome else { return XCTFail("hung for \(elapsed) s") }
        let values = try outcome.get()
        XCTAssertEqual(values, ["aborted", "threw: 0 stopping"])
    }

    func testSingleProcessCommunicatorIsNoOp() throws {
        let comm = SingleProcessCommunicator()
        XCTAssertEqual(comm.rank, 0)
        XCTAssertEqual(comm.size, 1)
        var values: [Float] = [1, 2]
        try comm.allReduce(&values, op: .sum)
        XCTAssertEqual(values, [1, 2])
        XCTAssertEqual(try comm.broadcast(bytes: [7, 8]), [7, 8])
        try comm.checkSame(42, what: "anything")
    }
}

/// The count of background work that collectives yield to (BackgroundWork.swift).
final class BackgroundWorkTests: XCTestCase {
    func testWorkIsPendingFromItsBeginToItsEndAndNested() {
        XCTAssertFalse(BackgroundWork.isPending)
        BackgroundWork.begin()
        XCTAssertTrue(BackgroundWork.isPending)
        BackgroundWork.begin()
        BackgroundWork.end()
        XCTAssertTrue(BackgroundWork.isPending, "one job still pending")
        for polls in 0..<256 { BackgroundWork.pollHook(polls) }   // yields four times, returns
        BackgroundWork.end()
        XCTAssertFalse(BackgroundWork.isPending)
    }
}
