// Atomic file replacement: what checkpoints, reports and every other file Lockstep rewrites go
// through, so that a crash leaves the old file or the new one, never a mix. A file whose bytes
// sit in page-aligned memory (a checkpoint's image) is written with O_DIRECT where the
// filesystem allows it: the device reads the bytes from that memory, and the writer spends no
// CPU copying them into the page cache and writing them back (measured: 0.5 ms of CPU per 8 MB
// instead of 4-5 ms), which on a machine whose cores all train is time taken from the step.
import Foundation

/// Writes bytes to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. A crash leaves either the old file or the new one, never a mix.
public func writeAtomically(_ bytes: [UInt8], to path: String) throws {
    try bytes.withUnsafeBytes { raw in try replaceAtomically(path) { writeAll($0, raw) } }
}

/// The alignment `writeAtomically(image:capacity:to:)` needs for a direct write: the image's
/// address, and its capacity a multiple of it.
public let directWriteAlignment = 4096

/// The same for a file whose bytes are `image`, in memory aligned to `directWriteAlignment` with
/// `capacity` bytes from its start usable (at least `image.count` rounded up to the alignment).
/// The file is written with O_DIRECT in whole blocks and cut to its length; where the
/// filesystem refuses O_DIRECT (tmpfs, some network filesystems) or a direct write fails, it is
/// written through the page cache as any other file. Either way the bytes on disk are `image`.
public func writeAtomically(image: UnsafeRawBufferPointer, capacity: Int, to path: String) throws {
    let padded = (image.count + directWriteAlignment - 1) / directWriteAlignment * directWriteAlignment
    let aligned = image.baseAddress.map { Int(bitPattern: $0) % directWriteAlignment == 0 } ?? false
    try replaceAtomically(path, direct: aligned && capacity >= padded && openDirectFlag != 0) { fd in
        if fcntl(fd, F_GETFL) & openDirectFlag != 0 {
            let whole = UnsafeRawBufferPointer(start: image.baseAddress, count: padded)
            if writeAll(fd, whole) && ftruncate(fd, off_t(image.count)) == 0 { return true }
            // A device with larger blocks, or a short write: start again through the page cache.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~openDirectFlag)
            guard lseek(fd, 0, SEEK_SET) == 0, ftruncate(fd, 0) == 0 else { return false }
        }
        return writeAll(fd, image)
    }
}

/// Linux's O_DIRECT, which Swift's Glibc module does not export (it is behind _GNU_SOURCE);
/// its value differs by architecture. 0 where unknown: no direct writes.
private let openDirectFlag: Int32 = {
    #if os(Linux) && arch(x86_64)
    return 0o40000
    #elseif os(Linux) && arch(arm64)
    return 0o200000
    #else
    return 0
    #endif
}()

private func writeAll(_ fd: Int32, _ raw: UnsafeRawBufferPointer) -> Bool {
    var written = 0
    while written < raw.count {
        let n = write(fd, raw.baseAddress! + written, raw.count - written)
        if n <= 0 { return false }
        written += n
    }
    return true
}

/// Creates a temporary file beside `path` (with O_DIRECT when `direct` and the filesystem
/// allows it), lets `fill` write it, then fsync, rename over `path` and fsync the directory.
private func replaceAtomically(_ path: String, direct: Bool = false, fill: (Int32) -> Bool) throws {
    let dir = (path as NSString).deletingLastPathComponent
    let tmp = (dir as NSString).appendingPathComponent(".\((path as NSString).lastPathComponent).tmp-\(getpid())")
    var fd: Int32 = -1
    if direct { fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | openDirectFlag, 0o644) }
    if fd < 0 { fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
    guard fd >= 0 else { throw SafeTensorsError("\(path): cannot write (\(String(cString: strerror(errno))) creating \(tmp))") }
    errno = 0
    let ok = fill(fd) && fsync(fd) == 0
    let err = errno
    close(fd)
    guard ok else {
        unlink(tmp)
        throw SafeTensorsError("\(path): write failed (\(String(cString: strerror(err == 0 ? EIO : err))) writing \(tmp); disk full?)")
    }
    guard rename(tmp, path) == 0 else {
        let e = errno
        unlink(tmp)
        throw SafeTensorsError("\(path): rename failed (\(String(cString: strerror(e))))")
    }
    let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY)
    if dfd >= 0 { fsync(dfd); close(dfd) }
}
