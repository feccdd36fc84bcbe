// A checkpoint taken between steps: its metadata and the safetensors file's whole image (the
// header, padded with spaces to whole pages, then one copy of every tensor's values) in
// page-aligned storage the background writer (CheckpointWriter) reuses. Taking it costs the step
// the header's encoding (tens of µs) and one memory copy of the state, less what the optimizer
// already wrote into a prepared image during the step's update (PreparedImage: with Adam, the
// parameters and both moments, so only the buffers are copied). The write happens off the step,
// straight from that storage (O_DIRECT where the filesystem allows: no second copy, no
// page-cache writeback).
import Formats
import Foundation

/// Storage laid out before a step for the checkpoint after it: the header gets `room` bytes (whole
/// pages), the values follow. `filled[i]` says source i is already in place (written by the
/// optimizer's update), so the snapshot does not copy it.
struct PreparedImage {
    let storage: UnsafeMutableRawBufferPointer
    let room: Int
    var filled: [Bool]

    /// Where source i's values go, for sources with these value counts.
    func values(at i: Int, counts: [Int]) -> UnsafeMutablePointer<Float> {
        (storage.baseAddress! + room).assumingMemoryBound(to: Float.self) + counts[..<i].reduce(0, +)
    }
}

final class CheckpointSnapshot: @unchecked Sendable {
    let metadata: [String: String]
    /// Every tensor's name, shape and range in `values`, in file order.
    let tensors: [(name: String, shape: [Int], range: Range<Int>)]
    /// The file's bytes: the header, then `values`.
    let image: UnsafeRawBufferPointer
    /// The storage's usable bytes from the image's start (for whole-block direct writes).
    let capacity: Int
    let values: UnsafeMutableBufferPointer<Float>
    /// Whether the prepared image was used: the sources it held were not copied.
    let usedPreparedImage: Bool

    /// Encodes the header and copies `sources` after it: into `prepared` when its header room
    /// fits (skipping the sources it holds already), else into `storage(bytes)`, which must
    /// return at least `bytes` bytes, page-aligned for direct writes.
    init(metadata: [String: String], sources: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)],
         prepared: PreparedImage? = nil, storage: (Int) throws -> UnsafeMutableRawBufferPointer) throws {
        self.metadata = metadata
        var offset = 0
        var list: [(name: String, shape: [Int], range: Range<Int>)] = []
        for s in sources {
            list.append((s.name, s.shape, offset..<(offset + s.values.count)))
            offset += s.values.count
        }
        tensors = list
        let head = try SafeTensorsFile.header(tensors: list.map { ($0.name, $0.shape, $0.range.count) }, metadata: metadata,
                                              alignment: directWriteAlignment, minimumLength: prepared?.room ?? 0)
        let bytes = head.count + offset * MemoryLayout<Float>.stride
        // The prepared image when the header fits its room (else every value is copied afresh).
        let fits = prepared.map { head.count == $0.room && $0.storage.count >= bytes && $0.filled.count == sources.count } ?? false
        let raw = fits ? prepared!.storage : try storage(bytes)
        precondition(raw.count >= bytes, "checkpoint storage too small")
        head.withUnsafeBytes { raw.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: head.count) }
        // The header fills whole pages, so the values are aligned.
        let floats = (raw.baseAddress! + head.count).bindMemory(to: Float.self, capacity: offset)
        for (i, (s, t)) in zip(sources, list).enumerated() where !s.values.isEmpty && !(fits && prepared!.filled[i]) {
            (floats + t.range.lowerBound).update(from: s.values.baseAddress!, count: s.values.count)
        }
        usedPreparedImage = fits
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
