// The Communicator: what a replica needs from the group of replicas it trains with.
//
// Three implementations share this protocol: SingleProcessCommunicator (collectives are
// no-ops), ThreadCommunicator (N ranks as threads of one process, for tests and
// `--simulate-ranks`), and MPICommunicator (the only code that talks to MPI).
// Collectives throw when another rank has failed, so that no rank waits forever.

public enum ReduceOp: Sendable { case sum, max, min }

public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// A short name for logs: "single", "threads", "mpi".
    var kind: String { get }

    /// In-place all-reduce of `buffer`; every rank ends with the same values.
    func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws
    func allReduce(_ buffer: UnsafeMutableBufferPointer<Double>, op: ReduceOp) throws
    /// Integer all-reduce: sums are exact and independent of the order ranks are combined in.
    func allReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws
    /// Starts an in-place float all-reduce and returns at once; the buffer must not be touched
    /// until the request completes. Ranks start their collectives in the same order. Where an
    /// implementation cannot overlap (threads, one process) it completes before returning.
    func startAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws -> PendingCollective
    func startAllReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws -> PendingCollective
    /// Sharding (ZeRO-1): `buffer` is cut into consecutive blocks of `counts` (one per rank,
    /// adding up to buffer.count). Afterwards block `rank` holds the sum over ranks; the other
    /// blocks hold unspecified values. Integer sums are exact.
    func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws
    func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Int64>, counts: [Int]) throws
    /// Each rank's block of `buffer` (blocks as in reduceScatter) is copied into every other rank's.
    func allGather(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws
    /// Exact mode's chunk-tree exchange (a reduce-scatter whose reduction the caller does in a
    /// fixed order): this rank's `pieces[rank]` pieces of `stride` floats lie one after another at
    /// `local`; rank q receives elements `segments[q]` of every rank's pieces, piece after piece
    /// in rank order, at `received` (segments[q].count floats per piece). Every rank passes the
    /// same pieces and segments.
    func scatterPieces(_ local: UnsafeMutablePointer<Float>, pieces: [Int], stride: Int, segments: [Range<Int>],
                       into received: UnsafeMutablePointer<Float>) throws
    /// The same, started (overlap buckets); `local` and `received` must stay put until it completes.
    func startScatterPieces(_ local: UnsafeMutablePointer<Float>, pieces: [Int], stride: Int, segments: [Range<Int>],
                            into received: UnsafeMutablePointer<Float>) throws -> PendingCollective
    /// Copies `root`'s bytes into every other rank's buffer (all buffers have the same size).
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws
    func barrier() throws
    /// A collective: `floats` floats per rank in memory every rank reads and writes directly
    /// (SharedMemory.swift), when every rank of the group runs on this host; nil otherwise, and
    /// always with one rank. Every rank passes the same count. It lives as long as the group.
    func sharedRegion(floats: Int) throws -> SharedRegion?
    /// Seconds a collective waits for the other ranks before it gives up with a CollectiveError
    /// naming the ranks that did not arrive (where the implementation can tell).
    var collectiveTimeout: Double { get set }
    /// Where the job stands ("step 57", "evaluation after step 60"), named in the message of a
    /// collective that times out.
    var context: String { get set }
    /// Ends the whole job: prints nothing itself (the caller has printed `rank R: message`).
    /// Under MPI this calls MPI_Abort; with threads it wakes every rank waiting in a collective.
    func abort(_ message: String)
}

/// A collective in flight (Communicator.startAllReduce).
public protocol PendingCollective: AnyObject {
    /// Advances the collective without waiting; true once it has completed.
    func test() throws -> Bool
    /// Waits until it completes (within the communicator's timeout, like any collective).
    func wait() throws
}

/// A collective that completed before it was returned.
public final class CompletedCollective: PendingCollective {
    public init() {}
    public func test() throws -> Bool { true }
    public func wait() throws {}
}

/// How long a collective waits, and what it says when it gives up.
public enum CollectiveTimeout {
    /// The base deadline: long enough for a slow first step, checkpoint write or data load on
    /// another rank.
    public static let defaultSeconds = 300.0
    /// The slowest link a deadline allows for, in bytes per second (100 Mbit/s Ethernet carries
    /// 12.5 MB/s): a collective that moves B bytes gets B / slowestLink seconds on top of the base.
    public static let slowestLink = 10e6

    /// The deadline of a collective with `payload` bytes per rank: the base plus the time to move
    /// twice the payload (a ring all-reduce sends and receives about 2·(p−1)/p of it) over the
    /// slowest link. The MLP's 2.7 MB gradients add 0.54 s; 1 GB of parameters add 200 s.
    public static func seconds(base: Double, payload: Int) -> Double {
        base + 2 * Double(payload) / slowestLink
    }

    /// "WHAT at CONTEXT timed out after S s: rank 1 (node1) did not arrive (...)"; `hosts` are
    /// the ranks' hostnames in rank order, when known.
    public static func message(_ what: String, context: String = "", seconds: Double, missing: [Int], hosts: [String] = []) -> String {
        let named = missing.map { r in r < hosts.count ? "\(r) (\(hosts[r]))" : "\(r)" }
        let who = missing.isEmpty ? "some rank did not arrive"
            : "rank\(missing.count == 1 ? "" : "s") \(named.joined(separator: ", ")) did not arrive"
        let at = context.isEmpty ? "" : " at \(context)"
        return "\(what)\(at) timed out after \(String(format: "%.3g", seconds)) s: \(who) (stopped, hung, or cut off); set check.collective_timeout to wait longer"
    }
}

public struct CollectiveError: Error, CustomStringConvertible {
    public let failedRank: Int
    public let message: String
    public init(failedRank: Int, message: String) { self.failedRank = failedRank; self.message = message }
    public var description: String { "rank \(failedRank) failed: \(message)" }
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    /// No shared memory unless an implementation says otherwise (callers send messages).
    public func sharedRegion(floats: Int) throws -> SharedRegion? { nil }

    /// The blocking fallback of startAllReduce, for implementations that cannot overlap.
    public func startAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws -> PendingCollective {
        try allReduce(buffer, op: op)
        return CompletedCollective()
    }
    public func startAllReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws -> PendingCollective {
        try allReduce(buffer, op: op)
        return CompletedCollective()
    }

    /// reduceScatter's and allGather's blocks: one per rank, covering the buffer.
    func checkBlocks(_ counts: [Int], _ total: Int) {
        precondition(counts.count == size && counts.reduce(0, +) == total, "reduce-scatter/all-gather: counts must split the buffer over the ranks")
    }

    /// The fallback of reduceScatter: the whole buffer all-reduced (same sums, more traffic).
    public func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        checkBlocks(counts, buffer.count)
        try allReduce(buffer, op: .sum)
    }
    public func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Int64>, counts: [Int]) throws {
        checkBlocks(counts, buffer.count)
        try allReduce(buffer, op: .sum)
    }
    /// The fallback of allGather: each rank broadcasts its block in turn.
    public func allGather(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        checkBlocks(counts, buffer.count)
        var offset = 0
        for (r, n) in counts.enumerated() {
            if n > 0 { try broadcast(UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[offset..<(offset + n)])), root: r) }
            offset += n
        }
    }

    /// The blocking fallback of startScatterPieces.
    public func startScatterPieces(_ local: UnsafeMutablePointer<Float>, pieces: [Int], stride: Int, segments: [Range<Int>],
                                   into received: UnsafeMutablePointer<Float>) throws -> PendingCollective {
        try scatterPieces(local, pieces: pieces, stride: stride, segments: segments, into: received)
        return CompletedCollective()
    }
    /// The fallback of scatterPieces: each rank broadcasts the segments' span of each of its
    /// pieces in turn, and every rank keeps its own segment.
    public func scatterPieces(_ local: UnsafeMutablePointer<Float>, pieces: [Int], stride: Int, segments: [Range<Int>],
                              into received: UnsafeMutablePointer<Float>) throws {
        precondition(pieces.count == size && segments.count == size && segments.allSatisfy { $0.upperBound <= stride },
                     "scatterPieces: one piece count and one segment per rank, within the stride")
        let lo = segments.map(\.lowerBound).min() ?? 0, hi = max(segments.map(\.upperBound).max() ?? 0, lo)
        let mine = segments[rank]
        guard hi > lo else { return }
        var span = [Float](repeating: 0, count: hi - lo)
        var piece = 0
        for (r, n) in pieces.enumerated() {
            for k in 0..<n {
                try span.withUnsafeMutableBufferPointer { b in
                    if r == rank { b.baseAddress!.update(from: local + k * stride + lo, count: hi - lo) }
                    try broadcast(UnsafeMutableRawBufferPointer(b), root: r)
                    (received + piece * mine.count).update(from: b.baseAddress! + (mine.lowerBound - lo), count: mine.count)
                }
                piece += 1
            }
        }
    }

    public func allReduce(_ values: inout [Double], op: ReduceOp = .sum) throws {
        try values.withUnsafeMutableBufferPointer { try allReduce($0, op: op) }
    }
    public func allReduce(_ values: inout [Float], op: ReduceOp = .sum) throws {
        try values.withUnsafeMutableBufferPointer { try allReduce($0, op: op) }
    }
    public func allReduce(_ values: inout [Int64], op: ReduceOp = .sum) throws {
        try values.withUnsafeMutableBufferPointer { try allReduce($0, op: op) }
    }
    public func allReduce(_ value: Double, op: ReduceOp = .sum) throws -> Double {
        var v = [value]
        try allReduce(&v, op: op)
        return v[0]
    }

    /// Broadcasts an array of plain values from `root` (sizes must agree on all ranks).
    public func broadcast<T>(_ values: inout [T], root: Int = 0) throws {
        try values.withUnsafeMutableBytes { try broadcast($0, root: root) }
    }

    /// Broadcasts a byte string from `root`: first its length, then its bytes.
    public func broadcast(bytes: [UInt8], root: Int = 0) throws -> [UInt8] {
        var length = [Double(rank == root ? bytes.count : 0)]
        try broadcast(&length, root: root)
        var out = rank == root ? bytes : [UInt8](repeating: 0, count: Int(length[0]))
        if !out.isEmpty { try broadcast(&out, root: root) }
        return out
    }

    /// Checks that every rank holds the same 64-bit fingerprint; throws naming what differed.
    public func checkSame(_ fingerprint: UInt64, what: String) throws {
        // Split into two exactly representable halves and compare max against min.
        var hi = [Double(fingerprint >> 32), Double(fingerprint & 0xFFFF_FFFF)]
        var lo = hi
        try allReduce(&hi, op: .max)
        try allReduce(&lo, op: .min)
        if hi != lo {
            throw CollectiveError(failedRank: rank, message: "\(what) differs between ranks (this is rank \(rank) of \(size)); every rank must run the same build with the same configuration")
        }
    }
}

/// FNV-1a, 64-bit: a stable fingerprint of bytes (Swift's Hasher is seeded per process).
public struct Fingerprint {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    public init() {}
    public mutating func add<S: Sequence>(bytes: S) where S.Element == UInt8 {
        for b in bytes { value = (value ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    }
    public mutating func add(_ string: String) { add(bytes: Array(string.utf8)); add(bytes: [0]) }
    public mutating func add(_ int: Int) { withUnsafeBytes(of: int.littleEndian) { add(bytes: $0) } }
    public mutating func add(floats: UnsafeBufferPointer<Float>) {
        for f in floats { withUnsafeBytes(of: f.bitPattern.littleEndian) { add(bytes: $0) } }
    }
}

/// One process, one rank: every collective is a no-op.
public final class SingleProcessCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var kind: String { "single" }
    public var collectiveTimeout = CollectiveTimeout.defaultSeconds
    public var context = ""
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws {}
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Double>, op: ReduceOp) throws {}
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws {}
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {}
    public func barrier() throws {}
    public func abort(_ message: String) {}
}
