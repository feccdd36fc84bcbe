// Fuzz harness for the checkpoint reader (Training.SafeTensorsFile): header, offsets, metadata,
// and reading every tensor it accepts. FUZZING: libFuzzer; otherwise replays its arguments.
import Foundation
import FuzzSupport
import Formats

func fuzzOne(_ bytes: [UInt8]) {
    guard let file = try? SafeTensorsFile(bytes: bytes, path: "input") else { return }
    for entry in file.entries { _ = file.values(entry) }
    _ = file.inspection(path: "input")
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzInput(data, size, fuzzOne) }
#else
@main struct Replay { static func main() { replayArguments(fuzzOne) } }
#endif
