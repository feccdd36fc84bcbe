// Atomic file replacement: what checkpoints, reports and every other file Lockstep rewrites go
// through, so that a crash leaves the old file or the new one, never a mix.
import Foundation

/// Writes bytes to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. A crash leaves either the old file or the new one, never a mix.
public func writeAtomically(_ bytes: [UInt8], to path: String) throws {
    try bytes.withUnsafeBytes { try writeAtomically(parts: [$0], to: path) }
}

/// The same for a file made of `parts` written one after another (a header and a tensor buffer,
/// with no copy joining them).
public func writeAtomically(parts: [UnsafeRawBufferPointer], to path: String) throws {
    let dir = (path as NSString).deletingLastPathComponent
    let tmp = (dir as NSString).appendingPathComponent(".\((path as NSString).lastPathComponent).tmp-\(getpid())")
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw SafeTensorsError("\(path): cannot write (\(String(cString: strerror(errno))) creating \(tmp))") }
    var ok = true
    for raw in parts where ok && raw.count > 0 {
        var written = 0
        while written < raw.count {
            let n = write(fd, raw.baseAddress! + written, raw.count - written)
            if n <= 0 { ok = false; break }
            written += n
        }
    }
    ok = ok && fsync(fd) == 0
    let err = errno
    close(fd)
    guard ok else {
        unlink(tmp)
        throw SafeTensorsError("\(path): write failed (\(String(cString: strerror(err))) writing \(tmp); disk full?)")
    }
    guard rename(tmp, path) == 0 else {
        let e = errno
        unlink(tmp)
        throw SafeTensorsError("\(path): rename failed (\(String(cString: strerror(e))))")
    }
    let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY)
    if dfd >= 0 { fsync(dfd); close(dfd) }
}
