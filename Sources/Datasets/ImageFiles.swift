// Streamed image folders (data.stream: true): the files of a split, read when a sample is used,
// so that no rank holds the pixels and each reads only the samples it takes. A sample is decoded,
// its shorter side scaled and its centre square kept, exactly as the in-memory path stores it,
// so both paths give the same bits. Every file was decoded once at start-up (the statistics
// pass), so a failure here means a file changed afterwards: the sample reads as zeros and the
// error waits in `takeFailure` for the loader to throw.
import Foundation

public final class ImageFiles: SampleSource, @unchecked Sendable {
    public let paths: [String]
    public let channels: Int
    /// The side of the stored square (data.resize, or image_size).
    public let side: Int
    private let lock = NSLock()
    private var failure: String?

    public init(paths: [String], channels: Int, side: Int) {
        (self.paths, self.channels, self.side) = (paths, channels, side)
    }

    /// Decodes sample `index` into its (C, side, side) bytes and runs `body` on them. Safe to
    /// call from several ranks' threads at once (nothing is shared but the failure).
    public var residentBytes: Int { paths.reduce(0) { $0 + $1.utf8.count + 16 } }

    public func withSample(_ index: Int, _ body: (UnsafeRawPointer) -> Void) {
        var bytes: [UInt8]
        do {
            bytes = ImageDecoding.resizeAndCenterCrop(try ImageDecoding.decode(paths[index], channels: channels), resize: side, size: side)
        } catch {
            lock.lock()
            if failure == nil { failure = "\(error) (the file changed after start-up?)" }
            lock.unlock()
            bytes = [UInt8](repeating: 0, count: channels * side * side)
        }
        bytes.withUnsafeBytes { body($0.baseAddress!) }
    }

    public func takeFailure() -> String? {
        lock.lock()
        defer { lock.unlock() }
        let f = failure
        failure = nil
        return f
    }

    /// Mean and standard deviation of every pixel of every stored square (the in-memory path's
    /// statistics), decoding each file once: this also checks every file before training.
    public func statistics() throws -> (mean: Float, std: Float) {
        var sum = 0.0, sumSquares = 0.0, n = 0
        for path in paths {
            let bytes = ImageDecoding.resizeAndCenterCrop(try ImageDecoding.decode(path, channels: channels), resize: side, size: side)
            for p in bytes { let v = Double(p) / 255; sum += v; sumSquares += v * v }
            n += bytes.count
        }
        let mean = sum / Double(max(n, 1))
        return (Float(mean), Float(max(sumSquares / Double(max(n, 1)) - mean * mean, 1e-12).squareRoot()))
    }
}
