// Work a process runs beside its rank (rank 0's checkpoint writer): while any is pending, a rank
// that waits in a collective gives its core away now and then (sched_yield) instead of spinning
// through the wait, so the work runs in the lock-step's idle moments rather than by preempting
// a rank that is computing. Every core here runs a busy rank; the writer is niced, so without
// this it ran only when the scheduler took a core from a rank (an 8 MB write took 40-80 ms of
// wall time for 0.4 ms of CPU, and the MLP lost 5-9% of its throughput to checkpoints every 20
// steps; docs/benchmarks.md, "Checkpoint cost").
import Foundation
import Synchronization

public enum BackgroundWork {
    private static let pending = Atomic<Int>(0)

    /// From when the work is handed over (its thread may not even have started) ...
    public static func begin() { pending.add(1, ordering: .relaxed) }
    /// ... until it has finished.
    public static func end() { pending.subtract(1, ordering: .relaxed) }

    public static var isPending: Bool { pending.load(ordering: .relaxed) > 0 }

    /// Called by a collective's polling loop on each poll: yields the core every 64th poll while
    /// work is pending (a poll is a fraction of a microsecond; a yield with nothing else runnable
    /// returns at once).
    @inline(__always)
    public static func pollHook(_ polls: Int) {
        if polls & 63 == 0 && isPending { sched_yield() }
    }
}
