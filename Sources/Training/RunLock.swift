// One writer per run directory: training holds an exclusive flock on `<dir>/.lockstep.lock`
// (naming its host, pid and start time) from before it writes or deletes anything until it
// ends; a second run on the directory fails with one line naming the holder. A lock file left
// by a process that is gone is taken over with a warning. Without flock (some network
// filesystems) the file's contents decide. Read-only commands take no lock.
import Collectives
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public final class RunLock {
    public static let fileName = ".lockstep.lock"
    public let directory: String
    public let path: String
    /// Lines for rank 0 to print: a stale lock taken over, a filesystem without flock.
    public let warnings: [String]
    /// This process's line in the lock file.
    let line: String
    let usesFlock: Bool
    private var fd: Int32

    /// Who holds (or held) a lock: the lock file's line `host H pid P started T`.
    struct Holder: Equatable {
        var host: String, pid: Int32, since: String

        init(host: String, pid: Int32, since: String) { (self.host, self.pid, self.since) = (host, pid, since) }

        init?(_ text: String) {
            let f = text.split(whereSeparator: \.isWhitespace).map(String.init)
            guard f.count == 6, f[0] == "host", f[2] == "pid", f[4] == "started", let pid = Int32(f[3]) else { return nil }
            self.init(host: f[1], pid: pid, since: f[5])
        }

        var line: String { "host \(host) pid \(pid) started \(since)" }
    }

    /// Takes the lock of `directory`, creating the directory if needed (`useFlock: false` tests the
    /// fallback for filesystems without flock). Throws a one-line error when another run holds it;
    /// then no file of the directory has been changed.
    public init(directory: String, useFlock: Bool = true) throws {
        try RunDirectory.create(directory)
        self.directory = directory
        let path = (directory as NSString).appendingPathComponent(RunLock.fileName)
        self.path = path
        let f = ISO8601DateFormatter()
        f.timeZone = TimeZone(identifier: "UTC")
        line = Holder(host: hostName(), pid: getpid(), since: f.string(from: Date())).line
        var warnings: [String] = []
        var flockWorks = useFlock
        // A holder that ends unlinks the file after we opened it: then we lock a file nobody else
        // will open, so the inode is compared and the open retried.
        for _ in 0..<50 {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw RunDirectoryError("\(path): cannot open the lock file (\(RunLock.errorText(errno)))") }
            if flockWorks {
                if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                    let e = errno
                    if e == EWOULDBLOCK {
                        let holder = RunLock.holder(fd, patient: true)
                        close(fd)
                        throw RunDirectoryError(RunLock.busy(directory, holder))
                    }
                    guard e == ENOLCK || e == EOPNOTSUPP || e == ENOTSUP else {
                        close(fd)
                        throw RunDirectoryError("\(path): cannot lock the lock file (\(RunLock.errorText(e)))")
                    }
                    warnings.append("lockstep: \(directory): the filesystem does not support flock (\(RunLock.errorText(e))); the lock file's contents decide who writes here")
                    flockWorks = false
                } else if !RunLock.isSameFile(fd, path) {
                    close(fd)
                    continue
                }
            }
            let previous = RunLock.holder(fd, patient: false)
            if let previous {
                if !flockWorks && previous.host == hostName() && RunLock.isAlive(previous.pid) {
                    close(fd)
                    throw RunDirectoryError(RunLock.busy(directory, previous))
                }
                if !flockWorks && previous.host != hostName() {
                    close(fd)
                    throw RunDirectoryError(RunLock.busy(directory, previous) + "; if that run is gone, remove \(path)")
                }
                warnings.append(RunLock.takeover(directory, previous))
            }
            let bytes = Array((line + "\n").utf8)
            guard ftruncate(fd, 0) == 0, pwrite(fd, bytes, bytes.count, 0) == bytes.count else {
                let e = errno
                close(fd)
                throw RunDirectoryError("\(path): cannot write the lock file (\(RunLock.errorText(e)))")
            }
            fsync(fd)
            self.fd = fd
            self.usesFlock = flockWorks
            self.warnings = warnings
            return
        }
        throw RunDirectoryError("\(path): the lock file was replaced 50 times while being taken; expected it to stay")
    }

    deinit { release() }

    /// Ends the lock: unlinks the file while still holding it (so a waiting process sees it gone),
    /// then closes it. Does nothing the second time.
    public func release() {
        guard fd >= 0 else { return }
        if RunLock.isSameFile(fd, path) && (usesFlock || RunLock.holder(fd, patient: false)?.line == line) { unlink(path) }
        close(fd)
        fd = -1
    }

    static func busy(_ directory: String, _ holder: Holder?) -> String {
        let who = holder.map { "host \($0.host), pid \($0.pid), since \($0.since)" } ?? "its lock file names no holder yet"
        return "\(directory): another lockstep run is writing here (\(who)); wait for it to end or choose another output.dir"
    }

    static func takeover(_ directory: String, _ holder: Holder) -> String {
        "lockstep: taking over the lock of \(directory) left by host \(holder.host) pid \(holder.pid) (that process is gone)"
    }

    /// The holder named in the open lock file; `patient` waits up to 0.5 s for a holder that has
    /// locked but not yet written its line.
    static func holder(_ fd: Int32, patient: Bool) -> Holder? {
        for attempt in 0..<(patient ? 50 : 1) {
            if attempt > 0 { usleep(10_000) }
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = pread(fd, &buffer, buffer.count, 0)
            if n > 0, let h = Holder(String(decoding: buffer[..<n], as: UTF8.self)) { return h }
        }
        return nil
    }

    static func isSameFile(_ fd: Int32, _ path: String) -> Bool {
        var open = stat(), named = stat()
        return fstat(fd, &open) == 0 && stat(path, &named) == 0 && open.st_ino == named.st_ino && open.st_dev == named.st_dev
    }

    /// A process of this host is alive (kill with signal 0 succeeds, or it is another user's).
    static func isAlive(_ pid: Int32) -> Bool { pid > 0 && (kill(pid, 0) == 0 || errno == EPERM) }

    static func errorText(_ e: Int32) -> String { String(cString: strerror(e)) }
}
