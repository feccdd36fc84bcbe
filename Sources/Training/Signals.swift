// Preemption: SIGTERM or SIGINT (or SIGUSR1, which mpirun forwards to the ranks: launch/train
// turns a SIGTERM/SIGINT to itself into one) asks every rank to stop after the current step,
// save a checkpoint and exit with `Preempted.exitCode`; a second signal exits at once.
import Foundation

public enum StopSignal {
    nonisolated(unsafe) static var flag: sig_atomic_t = 0
    public static var requested: Bool { flag != 0 }

    public static func install() {
        for sig in [SIGTERM, SIGINT, SIGUSR1] {
            signal(sig) { s in
                if StopSignal.flag != 0 { _exit(128 + s) }
                StopSignal.flag = 1
            }
        }
    }

    /// For tests.
    public static func request() { flag = 1 }
    public static func reset() { flag = 0 }
}

public struct Preempted: Error, CustomStringConvertible {
    /// The exit status of every rank after a signal-triggered stop with a checkpoint (EX_TEMPFAIL).
    public static let exitCode: Int32 = 75
    public let step: Int
    public var description: String { "stopped by a signal at step \(step); a checkpoint was written" }
}
