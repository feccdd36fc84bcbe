// A checkpoint taken between steps: its metadata and one copy of every tensor's values, encoded
// into a safetensors file later, on the background writer (CheckpointWriter). Taking it costs the
// step one memory copy of the state into storage the writer reuses; the JSON header and the
// write (straight from that storage: no second copy) happen off the step.
import Formats
import Foundation

final class CheckpointSnapshot: @unchecked Sendable {
    let metadata: [String: String]
    /// Every tensor's name, shape and range in `values`, in file order.
    let tensors: [(name: String, shape: [Int], range: Range<Int>)]
    let values: UnsafeMutableBufferPointer<Float>

    /// Copies `sources` into `storage` (at least their total count of floats).
    init(metadata: [String: String], sources: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)],
         storage: UnsafeMutableBufferPointer<Float>) {
        self.metadata = metadata
        var offset = 0
        var list: [(name: String, shape: [Int], range: Range<Int>)] = []
        for s in sources {
            precondition(offset + s.values.count <= storage.count, "checkpoint storage too small")
            if let base = s.values.baseAddress, !s.values.isEmpty { (storage.baseAddress! + offset).update(from: base, count: s.values.count) }
            list.append((s.name, s.shape, offset..<(offset + s.values.count)))
            offset += s.values.count
        }
        tensors = list
        values = storage
    }

    /// Writes the safetensors file atomically: its header, then the values straight from the
    /// snapshot's storage (tensors are back to back there, in file order).
    func write(to path: String) throws {
        let head = try SafeTensorsFile.header(tensors: tensors.map { ($0.name, $0.shape, $0.range.count) }, metadata: metadata)
        let count = tensors.last?.range.upperBound ?? 0
        #if _endian(little)
        try head.withUnsafeBytes { h in
            try writeAtomically(parts: [h, UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: values[0..<count]))], to: path)
        }
        #else
        try writeAtomically(try encode(), to: path)
        #endif
    }

    /// The safetensors file's bytes.
    func encode() throws -> [UInt8] {
        try SafeTensorsFile.encode(tensors: tensors.map { t in (t.name, t.shape, UnsafeBufferPointer(rebasing: values[t.range])) },
                                   metadata: metadata)
    }
}
