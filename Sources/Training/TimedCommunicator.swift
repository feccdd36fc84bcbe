// A communicator decorator that measures the time spent in collectives.
import Collectives
import TensorCore

public final class TimedCommunicator: Communicator {
    public let inner: Communicator
    public private(set) var seconds = 0.0
    public private(set) var calls = 0
    /// All-reduces and their payload in bytes since the last reset (the cost model's inputs).
    public private(set) var allReduces = 0
    public private(set) var allReduceBytes = 0

    public init(_ inner: Communicator) {
        self.inner = inner
        if inner.context.isEmpty { inner.context = "start-up" }
    }

    public var rank: Int { inner.rank }
    public var size: Int { inner.size }
    public var kind: String { inner.kind }

    public func reset() { seconds = 0; calls = 0; allReduces = 0; allReduceBytes = 0 }

    /// Where training stands ("step 57"), named by a timed-out collective's message.
    public var context: String {
        get { inner.context }
        set { inner.context = newValue }
    }

    @inline(__always) fileprivate func timed(_ body: () throws -> Void) throws {
        let t0 = monotonicSeconds()
        try body()
        seconds += monotonicSeconds() - t0
        calls += 1
    }

    private func counted(_ bytes: Int) { allReduces += 1; allReduceBytes += bytes }

    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws {
        counted(buffer.count * 4)
        try timed { try inner.allReduce(buffer, op: op) }
    }
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Double>, op: ReduceOp) throws {
        counted(buffer.count * 8)
        try timed { try inner.allReduce(buffer, op: op) }
    }
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws {
        counted(buffer.count * 8)
        try timed { try inner.allReduce(buffer, op: op) }
    }
    /// Starting counts as a call and its bytes; the time to start and every test or wait counts
    /// as collective time.
    public func startAllReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws -> PendingCollective {
        try started(bytes: buffer.count * 4) { try inner.startAllReduce(buffer, op: op) }
    }
    public func startAllReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws -> PendingCollective {
        try started(bytes: buffer.count * 8) { try inner.startAllReduce(buffer, op: op) }
    }
    private func started(bytes: Int, _ start: () throws -> PendingCollective) throws -> PendingCollective {
        counted(bytes)
        var request: PendingCollective = CompletedCollective()
        try timed { request = try start() }
        return TimedPending(request, owner: self)
    }

    /// Reduce-scatters and all-gathers count with the all-reduces (calls and payload bytes).
    public func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        counted(buffer.count * 4)
        try timed { try inner.reduceScatter(buffer, counts: counts) }
    }
    public func reduceScatter(_ buffer: UnsafeMutableBufferPointer<Int64>, counts: [Int]) throws {
        counted(buffer.count * 8)
        try timed { try inner.reduceScatter(buffer, counts: counts) }
    }
    public func allGather(_ buffer: UnsafeMutableBufferPointer<Float>, counts: [Int]) throws {
        counted(buffer.count * 4)
        try timed { try inner.allGather(buffer, counts: counts) }
    }

    /// Counted with the all-reduces: the bytes this rank sends.
    public func scatterPieces(_ local: UnsafeMutablePointer<Float>, pieces: [Int], stride: Int, segments: [Range<Int>],
                              into received: UnsafeMutablePointer<Float>) throws {
        counted(pieces[rank] * segments.reduce(0) { $0 + $1.count } * 4)
        try timed { try inner.scatterPieces(local, pieces: pieces, stride: stride, segments: segments, into: received) }
    }
    public func startScatterPieces(_ local: UnsafeMutablePointer<Float>, pieces: [Int], stride: Int, segments: [Range<Int>],
                                   into received: UnsafeMutablePointer<Float>) throws -> PendingCollective {
        try started(bytes: pieces[rank] * segments.reduce(0) { $0 + $1.count } * 4) {
            try inner.startScatterPieces(local, pieces: pieces, stride: stride, segments: segments, into: received)
        }
    }

    fileprivate func add(_ seconds: Double) { self.seconds += seconds }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        try timed { try inner.broadcast(buffer, root: root) }
    }
    public func barrier() throws { try timed { try inner.barrier() } }
    /// The region's fences count as collective time.
    public func sharedRegion(floats: Int) throws -> SharedRegion? {
        var region: SharedRegion?
        try timed { region = try inner.sharedRegion(floats: floats) }
        return region.map { TimedRegion(inner: $0, owner: self) }
    }
    public func abort(_ message: String) { inner.abort(message) }
    public var collectiveTimeout: Double {
        get { inner.collectiveTimeout }
        set { inner.collectiveTimeout = newValue }
    }
}

/// A pending collective whose tests and waits add to its communicator's collective time.
private final class TimedPending: PendingCollective {
    let inner: PendingCollective
    unowned let owner: TimedCommunicator
    init(_ inner: PendingCollective, owner: TimedCommunicator) { (self.inner, self.owner) = (inner, owner) }
    func test() throws -> Bool {
        let t0 = monotonicSeconds()
        defer { owner.add(monotonicSeconds() - t0) }
        return try inner.test()
    }
    func wait() throws {
        let t0 = monotonicSeconds()
        defer { owner.add(monotonicSeconds() - t0) }
        try inner.wait()
    }
}

/// A shared region whose fences add to its communicator's collective time.
final class TimedRegion: SharedRegion {
    let inner: SharedRegion
    let owner: TimedCommunicator
    init(inner: SharedRegion, owner: TimedCommunicator) { (self.inner, self.owner) = (inner, owner) }
    var floats: Int { inner.floats }
    func base(_ rank: Int) -> UnsafeMutablePointer<Float> { inner.base(rank) }
    func fence() throws { try owner.timed { try inner.fence() } }
}
