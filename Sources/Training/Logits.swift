// The logits of an evaluated split, gathered in sample order on every rank, and written as .npy
// (NumPy's format 1.0) or .safetensors, so another runtime can be compared sample by sample.
import Collectives
import Foundation
import TensorCore

extension Trainer {
    /// Evaluates the test split and returns every sample's logits (divided by the temperature),
    /// (count, classes) row-major in sample order, identical on every rank, with the labels.
    public func testLogits() throws -> (logits: [Float], labels: [Int32], result: EvaluationResult) {
        let classes = config.data.classes, count = testLoader.dataset.count
        var own = [Float]()
        let result = try evaluate(testLoader) { batch, labels in
            own += UnsafeBufferPointer(start: batch.data, count: labels.count * classes)
        }
        let share = testLoader.evaluationShare(rank: rank, worldSize: worldSize, batch: config.data.evalBatch)
        precondition(own.count == share.range.count * classes, "evaluation covered this rank's share")
        let all = try gatherRows(own, rows: share.range, totalRows: count, width: classes, communicator: communicator)
        return (all, testLoader.dataset.labels, result)
    }
}

/// Joins each rank's rows `rows` (of `width` floats) into the whole (totalRows × width) matrix
/// on every rank, in row order: each rank writes its rows into zeros and a sum gathers them
/// (x + 0 is x; a −0 would come back as +0, the same value).
public func gatherRows(_ own: [Float], rows: Range<Int>, totalRows: Int, width: Int, communicator: Communicator) throws -> [Float] {
    precondition(own.count == rows.count * width)
    var all = [Float](repeating: 0, count: totalRows * width)
    all.replaceSubrange((rows.lowerBound * width)..<(rows.upperBound * width), with: own)
    if communicator.size > 1 { try communicator.allReduce(&all, op: .sum) }
    return all
}

public enum ArrayFile {
    /// Writes a float32 matrix as `.npy` or `.safetensors` (tensor "logits"), chosen by the
    /// extension; any other extension is an error naming it.
    public static func writeMatrix(_ values: [Float], rows: Int, columns: Int, to path: String, name: String = "logits") throws {
        precondition(values.count == rows * columns)
        switch (path as NSString).pathExtension.lowercased() {
        case "npy": try writeAtomically(npy(values, shape: [rows, columns]), to: path)
        case "safetensors":
            let bytes = try values.withUnsafeBufferPointer {
                try SafeTensorsFile.encode(tensors: [(name, [rows, columns], $0)], metadata: ["format": "lockstep-logits"])
            }
            try writeAtomically(bytes, to: path)
        default:
            throw SafeTensorsError("\(path): expected a .npy or .safetensors file name for the logits")
        }
    }

    /// NumPy's .npy format 1.0: magic, version, a little-endian header length, a Python dict
    /// literal padded with spaces to a multiple of 64 bytes and ending in a newline, the data.
    public static func npy(_ values: [Float], shape: [Int]) -> [UInt8] {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        out += [UInt8(header.utf8.count & 255), UInt8(header.utf8.count >> 8)]
        out += Array(header.utf8)
        out.reserveCapacity(out.count + 4 * values.count)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        return out
    }
}
