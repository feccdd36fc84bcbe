// Fuzz harness for the CSV reader (Datasets.CSVReader.parse: with and without a header, integer
// and one-hot labels) and the binary PGM parser (Datasets.parsePGM). Built with -DFUZZING and
// --sanitize=fuzzer (fuzz/run), libFuzzer drives it; built plainly it replays its arguments.
import Datasets
import Foundation
import FuzzSupport

func fuzzOne(_ bytes: [UInt8]) {
    var plain = CSVFormat()
    _ = try? CSVReader.parse(bytes, path: "input", format: plain, classes: 3)
    plain.header = false
    plain.labels = .column("0")
    _ = try? CSVReader.parse(bytes, path: "input", format: plain, classes: 3)
    var oneHot = CSVFormat()
    oneHot.labels = .oneHot(["a", "b", "c"])
    _ = try? CSVReader.parse(bytes, path: "input", format: oneHot, classes: 3)
    if let table = try? CSVReader.parse(bytes, path: "input", format: CSVFormat(), classes: 3) {
        let (mean, std) = CSVReader.statistics(table.features)
        _ = CSVReader.dataset(table, name: "fuzz", classes: 3, mean: mean, std: std)
    }
    _ = try? parsePGM(bytes, path: "input")
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzInput(data, size, fuzzOne) }
#else
@main struct Replay { static func main() { replayArguments(fuzzOne) } }
#endif
