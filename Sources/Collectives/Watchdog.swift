// Watchdog: a deadline for calls that block inside a library and cannot poll one themselves
// (MPI's blocking all-reduce once every rank has arrived). A background thread, started on
// first use, checks the armed deadline four times a second; arming and disarming take a lock,
// nothing more, so guarding a call costs about as much as an uncontended mutex.
import Foundation

public final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    /// Seconds on the monotonic clock when the guarded call must have returned; nil: none armed.
    private var deadline: Double?
    private var describe: (() -> String)?
    private var started = false
    private let expire: (String) -> Void
    /// How often the thread looks at the deadline.
    static let period = 0.25

    /// `onExpiry` runs on the watchdog's thread with the expired call's description; it is
    /// expected to end the process (a call stuck in a library cannot be interrupted).
    public init(onExpiry: @escaping (String) -> Void) { expire = onExpiry }

    /// Runs `body`; if it has not returned within `seconds`, calls onExpiry with `describe()`.
    public func guarding<T>(seconds: Double, _ describe: @escaping () -> String, _ body: () throws -> T) rethrows -> T {
        lock.lock()
        deadline = Self.now() + seconds
        self.describe = describe
        let start = !started
        started = true
        lock.unlock()
        if start { startThread() }
        defer {
            lock.lock()
            deadline = nil
            self.describe = nil
            lock.unlock()
        }
        return try body()
    }

    private func startThread() {
        let thread = Thread { [self] in   // lives as long as the process
            while true {
                self.lock.lock()
                let expired = self.deadline.map { Self.now() > $0 } ?? false
                let text = expired ? self.describe?() : nil
                self.lock.unlock()
                if let text { self.expire(text); return }
                usleep(UInt32(Self.period * 1_000_000))
            }
        }
        thread.name = "lockstep-watchdog"
        thread.start()
    }

    /// Seconds on a clock that never goes back.
    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }
}
