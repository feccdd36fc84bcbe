// Where the ranks run: this process's hostname and every rank's, gathered with one collective.
import Foundation

/// This process's hostname ("?" when the system will not say).
public func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return "?" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Every rank's hostname (up to 63 bytes), in rank order. A collective: every rank takes part.
public func hostNames(_ comm: Communicator) throws -> [String] {
    var all = [Double](repeating: 0, count: 64 * comm.size)
    for (i, b) in hostName().utf8.prefix(63).enumerated() { all[comm.rank * 64 + i] = Double(b) }
    try comm.allReduce(&all, op: .sum)
    return (0..<comm.size).map { r in
        String(decoding: all[(r * 64)..<(r * 64 + 64)].map { UInt8($0) }.prefix { $0 != 0 }, as: UTF8.self)
    }
}
