// Fuzz harness for the checkpoint reader (Training.SafeTensorsFile): header, offsets, metadata,
// and reading every tensor it accepts. FUZZING: libFuzzer; otherwise replays its arguments.
import Foundation
import Training

func fuzzOne(_ bytes: [UInt8]) {
    guard let file = try? SafeTensorsFile(bytes: bytes, path: "input") else { return }
    for entry in file.entries { _ = file.values(entry) }
    _ = file.inspection(path: "input")
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzOne(size > 0 ? Array(UnsafeBufferPointer(start: data, count: size)) : [])
    return 0
}
#else
@main struct Replay {
    static func main() {
        for path in CommandLine.arguments.dropFirst() { fuzzOne([UInt8](FileManager.default.contents(atPath: path) ?? Data())) }
        print("replayed \(CommandLine.arguments.count - 1) input(s)")
    }
}
#endif
