// N ranks as threads of one process: the distributed code paths without MPI.
//
// Reductions sum in rank order (0, 1, ..., N-1), so results are deterministic and identical
// on every rank. When one rank calls `abort`, every rank blocked in (or later entering) a
// collective throws CollectiveError instead of waiting forever.
import Foundation

final class ThreadGroup: @unchecked Sendable {
    let size: Int
    private let condition = NSCondition()
    private var arrived = 0
    private var generation = 0
    /// Which ranks have arrived in the current generation (to name the missing ones).
    private var present: [Bool]
    /// Seconds a rank waits in a collective before giving up (Communicator.collectiveTimeout).
    var timeout = CollectiveTimeout.defaultSeconds
    private(set) var failure: CollectiveError?
    /// One published buffer address per rank (each rank writes only its own slot).
    let slots: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private(set) var scratch = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
    private var scratchBytes = 64

    /// Grows the shared scratch buffer; called by rank 0 only, while no rank is reading it.
    func reserveScratch(_ bytes: Int) {
        if bytes > scratchBytes {
            scratch.deallocate()
            scratch = .allocate(byteCount: bytes, alignment: 16)
            scratchBytes = bytes
        }
    }

    /// Every part of every shared region (ThreadCommunicator.sharedRegion), freed with the group.
    private var shared: [UnsafeMutableRawPointer] = []
    private let sharedLock = NSLock()

    func keep(_ part: UnsafeMutableRawPointer) {
        sharedLock.lock(); shared.append(part); sharedLock.unlock()
    }

    deinit {
        scratch.deallocate()
        slots.deallocate()
        for part in shared { part.deallocate() }
    }

    init(size: Int) {
        self.size = size
        self.slots = .allocate(capacity: size)
        self.slots.initialize(repeating: nil, count: size)
        present = [Bool](repeating: false, count: size)
    }

    /// Blocks until all ranks arrive; throws if any rank aborted, or when the others do not all
    /// arrive within `timeout` seconds (naming those that did not).
    func wait(rank: Int, context: String, _ what: @autoclosure () -> String) throws {
        condition.lock()
        defer { condition.unlock() }
        if let f = failure { throw f }
        let myGeneration = generation
        arrived += 1
        present[rank] = true
        if arrived == size {
            arrived = 0
            generation += 1
            for r in 0..<size { present[r] = false }
            condition.broadcast()
            return
        }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while generation == myGeneration && failure == nil {
            if !condition.wait(until: deadline) && generation == myGeneration && failure == nil {
                let missing = (0..<size).filter { !present[$0] }
                failure = CollectiveError(failedRank: rank, message: CollectiveTimeout.message(what(), context: context, seconds: timeout, missing: missing))
                condition.broadcast()
            }
        }
        if let f = failure { throw f }
    }

    func fail(rank: Int, message: String) {
        condition.lock()
        if failure == nil { failure = CollectiveError(failedRank: rank, message: message) }
        condition.broadcast()
        condition.unlock()
    }
}

public final class ThreadCommunicator: Communicator {
    public let rank: Int
    public var size: Int { group.size }
    public var kind: String { "threads" }
    let group: ThreadGroup

    init(rank: Int, group: ThreadGroup) {
        self.rank = rank
        self.group = group
    }

    /// Runs `body` on `size` threads, one communicator each, and returns their results in rank
    /// order. If any rank throws, the others are released from their collectives and the
    /// first rank's own error (not the echoes it caused) is rethrown.
    public static func run<R>(size: Int, stackSize: Int = 16 << 20,
                              _ body: @escaping (ThreadCommunicator) throws -> R) throws -> [R] {
        precondition(size >= 1)
        let group = ThreadGroup(size: size)
        let results = LockedSlots<R>(size)
        let errors = LockedSlots<Error>(size)
        let done = DispatchGroup()
        for r in 0..<size {
            done.enter()
            let thread = Thread {
                let comm = ThreadCommunicator(rank: r, group: group)
                do {
                    let value = try body(comm)
                    results.set(r, value)
                } catch {
                    errors.set(r, error)
                    // Release every rank waiting in a collective (a no-op if one already failed).
                    comm.abort("\(error)")
                }
                done.leave()
            }
            thread.stackSize = stackSize
            thread.start()
        }
        done.wait()
        // Prefer the root cause: an error that is not an echo of another rank's failure.
        let failures = errors.values.compactMap { $0 }
        if let cause = failures.first(where: { !($0 is CollectiveError) }) { throw cause }
        if let echo = failures.first { throw echo }
        return results.values.map { $0! }
    }

    public func abort(_ message: String) { group.fail(rank: rank, message: message) }
    public var context = ""

    public var collectiveTimeout: Double {
        get { group.timeout }
        set { group.timeout = newValue }
    }

    public func barrier() throws { try group.wait(rank: rank, context: context, "barrier") }

    /// Threads share an address space: each rank allocates its part and publishes it.
    public func sharedRegion(floats: Int) throws -> SharedRegion? {
        if size == 1 { return nil }
        let part = UnsafeMutableRawPointer.allocate(byteCount: max(floats, 1) * 4, alignment: 64)
        part.initializeMemory(as: Float.self, repeating: 0, count: max(floats, 1))
        group.keep(part)
        group.slots[rank] = part
        try group.wait(rank: rank, context: context, "shared region of \(floats) floats per rank")
        let bases = (0..<size).map { group.slots[$0]!.assumingMemoryBound(to: Float.self) }
        try group.wait(rank: rank, context: context, "shared region of \(floats) floats per rank")
        return ThreadSharedRegion(floats: floats, bases: bases, communicator: self)
    }

    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws {
        try reduce(buffer, op: op)
    }
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Double>, op: ReduceOp) throws {
        try reduce(buffer, op: op)
    }
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws {
        try reduce(buffer, op: op)
    }

    private func reduce<T: AdditiveArithmetic & Comparable>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp) throws {
        let n = buffer.count
        let what = { "all-reduce (\(op)) of \(n) \(T.self) values" }
        // Every rank passes the same count, so all of them return here together.
        if size == 1 || n == 0 { return }
        // Phase 1: publish our buffer.
        group.slots[rank] = UnsafeMutableRawPointer(buffer.baseAddress)
        if rank == 0 { group.reserveScratch(n * MemoryLayout<T>.stride) }
        try group.wait(rank: rank, context: context, what())
        // Phase 2: each rank reduces its chunk of elements, reading every rank in rank order.
        let lo = n * rank / size, hi = n * (rank + 1) / size
        do {
            let out = group.scratch.assumingMemoryBound(to: T.self)
            let inputs = (0..<size).map { group.slots[$0]!.assumingMemoryBound(to: T.self) }
            for i in lo..<hi {
                var acc = inputs[0][i]
                for r in 1..<size {
                    let v = inputs[r][i]
                    switch op {
                    case .sum: acc += v
                    case .max: acc = Swift.max(acc, v)
                    case .min: acc = Swift.min(acc, v)
                    }
                }
                out[i] = acc
            }
        }
        try group.wait(rank: rank, context: context, what())
        // Phase 3: copy the result out, then wait so that no rank reuses scratch too early.
        let src = group.scratch.assumingMemoryBound(to: T.self)
        for i in 0..<n { buffer[i] = src[i] }
        try group.wait(rank: rank, context: context, what())
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        if size == 1 || buffer.count == 0 { return }
        let what = { "broadcast of \(buffer.count) bytes from rank \(root)" }
        group.slots[rank] = buffer.baseAddress
        try group.wait(rank: rank, context: context, what())
        if rank != root, buffer.count > 0 {
            buffer.baseAddress!.copyMemory(from: group.slots[root]!, byteCount: buffer.count)
        }
        try group.wait(rank: rank, context: context, what())
    }
}

/// Per-rank result slots written from the rank threads.
final class LockedSlots<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T?]
    init(_ n: Int) { items = Array(repeating: nil, count: n) }
    func set(_ i: Int, _ v: T) { lock.lock(); items[i] = v; lock.unlock() }
    var values: [T?] { lock.lock(); defer { lock.unlock() }; return items }
}
