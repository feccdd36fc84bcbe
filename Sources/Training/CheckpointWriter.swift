// Writing checkpoint files off the step: rank 0 hands a snapshot (a copy of the state, taken
// between steps into storage this writer keeps) to one background thread, which writes
// each file atomically (temporary file, fsync, rename, directory fsync) and prunes old
// checkpoints. At most one write is in flight: the next checkpoint waits for the previous one,
// so memory holds the state and one copy.
// A write that fails is reported by the next checkpoint or by the end of the run, naming the file.
import Formats
import Foundation

final class CheckpointWriter: @unchecked Sendable {
    private let queue = DispatchQueue(label: "lockstep.checkpoint-writer", qos: .utility)
    private let group = DispatchGroup()
    private let lock = NSLock()
    private var failure: Error?
    /// Seconds the trainer waited for a previous write to finish (a write slower than the steps
    /// between two checkpoints).
    private(set) var waitedSeconds = 0.0

    /// Storage for the next snapshot (`bytes` bytes, page-aligned and a whole number of pages,
    /// for direct writes), once the write before has finished (its failure is rethrown). Reused
    /// from one checkpoint to the next: no fresh pages to fault in.
    func storage(bytes: Int) throws -> UnsafeMutableRawBufferPointer {
        try wait()
        if buffer.count < bytes {
            buffer.deallocate()
            let pages = (bytes + directWriteAlignment - 1) / directWriteAlignment * directWriteAlignment
            buffer = .allocate(byteCount: pages, alignment: directWriteAlignment)
        }
        return buffer
    }
    private var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: directWriteAlignment)
    deinit { group.wait(); buffer.deallocate() }

    /// Queues `snapshot`'s file at each of `paths` and then a prune of `prune.directory` to
    /// `prune.keep` checkpoints; first waits for the write before it and rethrows its failure.
    func submit(_ snapshot: CheckpointSnapshot, to paths: [String], prune: (directory: String, keep: Int)?) throws {
        try wait()
        group.enter()
        queue.async { [self] in
            defer { group.leave() }
            do {
                for path in paths { try snapshot.write(to: path) }
                if let prune { Checkpointer.prune(prune.directory, keep: prune.keep) }
            } catch {
                lock.lock()
                failure = error
                lock.unlock()
            }
        }
    }

    /// Waits until no write is in flight; rethrows a failed write's error (once).
    func wait() throws {
        let t0 = Date()
        group.wait()
        waitedSeconds += Date().timeIntervalSince(t0)
        lock.lock()
        defer { lock.unlock() }
        if let error = failure {
            failure = nil
            throw error
        }
    }
}
