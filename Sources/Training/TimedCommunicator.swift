// A communicator decorator that measures the time spent in collectives.
import Collectives
import TensorCore

public final class TimedCommunicator: Communicator {
    public let inner: Communicator
    public private(set) var seconds = 0.0
    public private(set) var calls = 0

    public init(_ inner: Communicator) { self.inner = inner }

    public var rank: Int { inner.rank }
    public var size: Int { inner.size }
    public var kind: String { inner.kind }

    public func reset() { seconds = 0; calls = 0 }

    @inline(__always) private func timed(_ body: () throws -> Void) rethrows {
        let t0 = monotonicSeconds()
        try body()
        seconds += monotonicSeconds() - t0
        calls += 1
    }

    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Float>, op: ReduceOp) throws {
        try timed { try inner.allReduce(buffer, op: op) }
    }
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Double>, op: ReduceOp) throws {
        try timed { try inner.allReduce(buffer, op: op) }
    }
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, op: ReduceOp) throws {
        try timed { try inner.allReduce(buffer, op: op) }
    }
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        try timed { try inner.broadcast(buffer, root: root) }
    }
    public func barrier() throws { try timed { try inner.barrier() } }
    public func abort(_ message: String) { inner.abort(message) }
}
