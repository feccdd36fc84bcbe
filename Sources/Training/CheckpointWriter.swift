// Writing checkpoint files off the step: rank 0 hands the serialised bytes (a copy of the state,
// taken between steps) to one background thread, which writes each file atomically (temporary
// file, fsync, rename, directory fsync) and prunes old checkpoints. At most one write is in
// flight: the next checkpoint waits for the previous one, so memory holds at most two copies.
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

    /// Queues `files` (written in order) and then a prune of `prune.directory` to `prune.keep`
    /// checkpoints; first waits for the write before it and rethrows its failure.
    func submit(_ files: [(bytes: [UInt8], path: String)], prune: (directory: String, keep: Int)?) throws {
        try wait()
        group.enter()
        queue.async { [self] in
            defer { group.leave() }
            do {
                for f in files { try writeAtomically(f.bytes, to: f.path) }
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
