// A checkpoint taken between steps: its metadata and the safetensors file's whole image (the
// header, then one copy of every tensor's values) in page-aligned storage the background writer
// (CheckpointWriter) reuses. Taking it costs the step the header's encoding (tens of µs) and one
// memory copy of the state; the write happens off the step, straight from that storage (O_DIRECT
// where the filesystem allows: no second copy, no page-cache writeback).
import Formats
import Foundation

final class CheckpointSnapshot: @unchecked Sendable {
    let metadata: [String: String]
    /// Every tensor's name, shape and range in `values`, in file order.
    let tensors: [(name: String, shape: [Int], range: Range<Int>)]
    /// The file's bytes: the header, then `values`.
    let image: UnsafeRawBufferPointer
    /// The storage's usable bytes from the image's start (for whole-block direct writes).
    let capacity: Int
    let values: UnsafeMutableBufferPointer<Float>

    /// Encodes the header and copies `sources` after it into `storage(bytes)`, which must return
    /// at least `bytes` bytes, aligned for floats (the writer's are page-aligned).
    init(metadata: [String: String], sources: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)],
         storage: (Int) throws -> UnsafeMutableRawBufferPointer) throws {
        self.metadata = metadata
        var offset = 0
        var list: [(name: String, shape: [Int], range: Range<Int>)] = []
        for s in sources {
            list.append((s.name, s.shape, offset..<(offset + s.values.count)))
            offset += s.values.count
        }
        tensors = list
        let head = try SafeTensorsFile.header(tensors: list.map { ($0.name, $0.shape, $0.range.count) }, metadata: metadata)
        let bytes = head.count + offset * MemoryLayout<Float>.stride
        let raw = try storage(bytes)
        precondition(raw.count >= bytes, "checkpoint storage too small")
        head.withUnsafeBytes { raw.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: head.count) }
        // The header's length is a multiple of 8 (SafeTensorsFile pads it), so the values are aligned.
        let floats = (raw.baseAddress! + head.count).bindMemory(to: Float.self, capacity: offset)
        for (s, t) in zip(sources, list) where !s.values.isEmpty {
            (floats + t.range.lowerBound).update(from: s.values.baseAddress!, count: s.values.count)
        }
        values = UnsafeMutableBufferPointer(start: floats, count: offset)
        image = UnsafeRawBufferPointer(start: raw.baseAddress, count: bytes)
        capacity = raw.count
    }

    /// Writes the safetensors file atomically, straight from the image.
    func write(to path: String) throws {
        #if _endian(little)
        try writeAtomically(image: image, capacity: capacity, to: path)
        #else
        try writeAtomically(try encode(), to: path)
        #endif
    }

    /// The safetensors file's bytes.
    func encode() throws -> [UInt8] {
        #if _endian(little)
        return Array(image)
        #else
        return try SafeTensorsFile.encode(tensors: tensors.map { t in (t.name, t.shape, UnsafeBufferPointer(rebasing: values[t.range])) },
                                          metadata: metadata)
        #endif
    }
}
