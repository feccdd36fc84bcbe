// Overlapping the fast path's gradient all-reduce with backward: buckets of the gradient arena
// are all-reduced while earlier layers still back-propagate.
//
// Backward runs from the last layer to the first and layers own ascending ranges of the arena,
// so after each layer the arena's tail from that layer's start is final. When the final part not
// yet sent reaches the bucket size, a non-blocking all-reduce starts on it; every later layer
// boundary tests the requests in flight, which is where MPI makes progress (no communication
// thread: a rank usually has one core, which a polling thread would take from backward, and
// SyncBN's all-reduces run on the training thread during backward, which with a second thread
// would need MPI_THREAD_MULTIPLE). After backward the rest, from offset 0, goes out with the
// blocking all-reduce (nothing is left to hide it behind) and every request is waited for. The
// buckets are the same on every rank (same layout, same bucket size), so ranks start their
// collectives in the same order. The stop flag rides in the spare float after the gradients, in
// the first bucket sent.
import Collectives
import NN
import TensorCore

final class GradientBuckets {
    let grads: UnsafeMutableBufferPointer<Float>   // the gradients and the spare float
    let bucketFloats: Int
    let communicator: Communicator
    private var unsent: Int                         // grads[unsent...] are in flight or done
    private var inFlight: [PendingCollective] = []
    private(set) var bucketsSent = 0

    init(grads: UnsafeMutableBufferPointer<Float>, bucketBytes: Int, communicator: Communicator) {
        self.grads = grads
        bucketFloats = max(bucketBytes / 4, 1)
        self.communicator = communicator
        unsent = grads.count
    }

    /// After a layer's backward: gradients from `start` on are final.
    func layerFinished(start: Int) throws {
        if unsent - start >= bucketFloats { try send(from: start) }
        for r in inFlight { _ = try r.test() }
    }

    /// After backward: waits for every bucket, and all-reduces what is left with the blocking
    /// all-reduce (nothing is left to overlap it with, and MPI's blocking all-reduce is faster
    /// than its non-blocking one for large buffers).
    func finish() throws {
        if unsent > 0 {
            try communicator.allReduce(UnsafeMutableBufferPointer(rebasing: grads[0..<unsent]), op: .sum)
            unsent = 0
            bucketsSent += 1
        }
        for r in inFlight { try r.wait() }
        inFlight = []
    }

    private func send(from start: Int) throws {
        let bucket = UnsafeMutableBufferPointer(rebasing: grads[start..<unsent])
        inFlight.append(try communicator.startAllReduce(bucket, op: .sum))
        unsent = start
        bucketsSent += 1
    }
}
