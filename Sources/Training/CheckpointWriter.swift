// Writing checkpoint files off the step: rank 0 hands a snapshot (the state's image, taken
// between steps into storage this writer keeps) to one background thread of its own, which
// writes each file atomically (temporary file, fsync, rename, directory fsync) and prunes old
// checkpoints. At most one write is in flight: the next checkpoint waits for the previous one,
// so memory holds the state and one image.
// The thread runs at nice 19: on a host whose cores all run ranks, a write woken at normal
// priority preempted the rank that handed it over (0.4-0.75 ms of the MLP's checkpoint step,
// which the lock-step passed on to every rank); niced, the hand-over takes 0.03 ms. Ranks
// spin while they wait in a collective, so without help a niced write ran only when the
// scheduler took a core from a rank (40-85 ms for an 8 MB file); from the hand-over to its end
// the write is BackgroundWork (Collectives), and waiting ranks yield their core to it (9-26 ms).
// A write that fails is reported by the next checkpoint or by the end of the run, naming the file.
import CKernels
import Collectives
import Formats
import Foundation

final class CheckpointWriter: @unchecked Sendable {
    /// What the trainer and the writer thread share (the thread holds this, not the writer, so
    /// the writer's deinit can close it and wait for the last write).
    private final class Shared: @unchecked Sendable {
        let condition = NSCondition()
        /// The write handed over and not yet started, and whether one is in flight.
        var job: (() throws -> Void)?
        var busy = false
        var closing = false
        var failure: Error?
        let exited = DispatchSemaphore(value: 0)
    }
    private let shared = Shared()
    private var started = false
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
            // Large images in whole 2 MB pages, which Linux may back with huge pages: a direct
            // write then pins 4 pages instead of 2,048, and its CPU time for an 8 MB file falls
            // from 0.86-0.96 ms to 0.35-0.42 ms (measured on this project's Zen 4 machine).
            let huge = 2 << 20
            let unit = bytes >= huge ? huge : directWriteAlignment
            let size = (bytes + unit - 1) / unit * unit
            buffer = .allocate(byteCount: size, alignment: unit)
            #if os(Linux)
            if unit == huge { _ = madvise(buffer.baseAddress, size, MADV_HUGEPAGE) }
            #endif
        }
        return buffer
    }
    private var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: directWriteAlignment)

    deinit {
        shared.condition.lock()
        shared.closing = true
        shared.condition.broadcast()
        shared.condition.unlock()
        if started { shared.exited.wait() }   // the last write finishes before its storage goes
        buffer.deallocate()
    }

    /// Queues `snapshot`'s file at each of `paths` and then a prune of `prune.directory` to
    /// `prune.keep` checkpoints; first waits for the write before it and rethrows its failure.
    func submit(_ snapshot: CheckpointSnapshot, to paths: [String], prune: (directory: String, keep: Int)?) throws {
        try wait()
        if !started {
            started = true
            let thread = Thread { [shared] in CheckpointWriter.serve(shared) }
            thread.name = "lockstep checkpoint writer"
            thread.start()
        }
        shared.condition.lock()
        defer { shared.condition.unlock() }
        BackgroundWork.begin()   // ended by the writer thread when the job is done
        shared.job = {
            for path in paths { try snapshot.write(to: path) }
            if let prune { Checkpointer.prune(prune.directory, keep: prune.keep) }
        }
        shared.busy = true
        shared.condition.broadcast()
    }

    /// The writer thread: one job at a time until the writer closes.
    private static func serve(_ shared: Shared) {
        _ = lockstep_set_thread_nice(19)
        shared.condition.lock()
        while true {
            while shared.job == nil && !shared.closing { shared.condition.wait() }
            guard let next = shared.job else { break }
            shared.job = nil
            shared.condition.unlock()
            var error: Error?
            do { try next() } catch let e { error = e }
            BackgroundWork.end()
            shared.condition.lock()
            if let error { shared.failure = error }
            shared.busy = false
            shared.condition.broadcast()
        }
        shared.condition.unlock()
        shared.exited.signal()
    }

    /// Waits until no write is in flight; rethrows a failed write's error (once).
    func wait() throws {
        let t0 = Date()
        shared.condition.lock()
        defer { shared.condition.unlock() }
        while shared.busy { shared.condition.wait() }
        waitedSeconds += Date().timeIntervalSince(t0)
        if let error = shared.failure {
            shared.failure = nil
            throw error
        }
    }
}
