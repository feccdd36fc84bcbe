// Fuzz harness for the IDX parser (Datasets.parseIDX) as labels (rank 1) and images (rank 3).
// Built with -DFUZZING and --sanitize=fuzzer (fuzz/run), libFuzzer drives it; built plainly it
// replays the files given as arguments (the seed corpus, or a crash to reproduce).
import Datasets
import Foundation
import FuzzSupport

func fuzzOne(_ bytes: [UInt8]) {
    _ = try? parseIDX(bytes, path: "input", expectedRank: 1)
    _ = try? parseIDX(bytes, path: "input", expectedRank: 3)
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzInput(data, size, fuzzOne) }
#else
@main struct Replay { static func main() { replayArguments(fuzzOne) } }
#endif
