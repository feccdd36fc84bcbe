// A float32 matrix as a file other runtimes read: NumPy's .npy (format 1.0) or a one-tensor
// .safetensors, chosen by the file's extension (`lockstep eval --logits`).
import Foundation

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
