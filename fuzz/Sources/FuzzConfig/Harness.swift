// Fuzz harness for the config reader (Training.TrainingConfig.parse): the YAML document, and
// `--set` overrides taken from the lines after a line "---set" in the input. FUZZING: libFuzzer;
// otherwise replays its arguments.
import Foundation
import FuzzSupport
import Configuration

func fuzzOne(_ bytes: [UInt8]) {
    guard let text = String(bytes: bytes, encoding: .utf8) else { return }
    var yaml = text, overrides: [String] = []
    if let range = text.range(of: "\n---set\n") {
        yaml = String(text[..<range.lowerBound])
        overrides = text[range.upperBound...].split(separator: "\n").map(String.init)
    }
    _ = try? TrainingConfig.parse(yaml: yaml, file: "input", overrides: overrides)
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzInput(data, size, fuzzOne) }
#else
@main struct Replay { static func main() { replayArguments(fuzzOne) } }
#endif
