// What every fuzz harness shares: turning libFuzzer's input into bytes, and the plain build's
// replay of the files given as arguments.
import Foundation

/// libFuzzer's input as bytes for `body`.
public func fuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int, _ body: ([UInt8]) -> Void) -> CInt {
    body(size > 0 ? Array(UnsafeBufferPointer(start: data, count: size)) : [])
    return 0
}

/// Runs `body` on each file named on the command line (the seed corpus, or a crash to reproduce).
public func replayArguments(_ body: ([UInt8]) -> Void) {
    for path in CommandLine.arguments.dropFirst() { body([UInt8](FileManager.default.contents(atPath: path) ?? Data())) }
    print("replayed \(CommandLine.arguments.count - 1) input(s)")
}
