// `lockstep pack`: a config's data (image folder, IDX, CIFAR-10, CSV) into packed shards for
// `data.format: packed`, with a progress bar, the count per class and the normalisation
// statistics in the manifest; `--verify DIR` checks a packed set byte by byte.
import ArgumentParser
import Configuration
import Datasets
import Foundation
import Launch
import Training

struct Pack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a config's data into packed shards (data.format: packed), or verify a packed set.",
        discussion: """
            lockstep pack --config C OUT/    writes OUT/manifest.json and OUT/<split>-NNNNN.lsp
            lockstep pack --verify OUT/      checks every shard's size, header and checksums
            Then train with --set data.format=packed --set data.path=OUT (docs/packed-format.md).
            """)
    @Option(name: .long, help: "The config whose data to pack.") var config: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key (repeatable).", valueName: "key=value"))
    var overrides: [String] = []
    @Option(name: .long, help: "Largest shard file, in MiB.") var shardMib = 256
    @Flag(name: .long, help: "Verify the packed set OUT instead of writing one.") var verify = false
    @Argument(help: "The output directory (new or empty), or the set to verify.") var output: String

    func validate() throws {
        if !verify && config == nil { throw ValidationError("give --config C (the data to pack) or --verify") }
        if shardMib < 1 { throw ValidationError("--shard-mib: expected at least 1, got \(shardMib)") }
    }

    func run() throws {
        let console = Console(isEnabled: true)
        let status: Int32
        do {
            status = verify ? try runVerify(console) : try runPack(console)
        } catch {
            console.clearBar()
            printError(Launcher.line(rank: nil, error))
            Foundation.exit(1)
        }
        Foundation.exit(status)
    }

    func runPack(_ console: Console) throws -> Int32 {
        let cfg = try TrainingConfig.load(path: config!, overrides: overrides)
        guard cfg.data.format != .packed else { throw ValidationError("\(config!): data.format is already packed") }
        console.line("lockstep pack: reading \(cfg.data.format.rawValue) data from \(cfg.data.path)")
        let start = Date()
        let summary = try Packer.pack(cfg, output: output, shardBytes: shardMib << 20) { done, total in
            console.progress(done, of: total, "records")
        }
        console.clearBar()
        let m = summary.manifest
        let names = m.classNames ?? (0..<m.classes).map { "\($0)" }
        for split in m.splits.keys.sorted() {
            let s = m.splits[split]!
            console.line("  \(split): \(s.count) samples in \(s.shards.count) shard(s); per class: "
                         + zip(names, s.classCounts).map { "\($0) \($1)" }.joined(separator: ", "))
        }
        if m.recordType == .bytes {
            console.line("  records \(m.storedShape.map(String.init).joined(separator: "×")) bytes; per-channel mean "
                         + m.channelMean.map { String(format: "%.4f", $0) }.joined(separator: " ")
                         + ", std " + m.channelStd.map { String(format: "%.4f", $0) }.joined(separator: " "))
        }
        console.line(String(format: "lockstep pack: wrote %@ (%.1f MB) in %.1f s; train with --set data.format=packed --set data.path=%@",
                            PackManifest.path(output), Double(summary.bytes) / 1e6, Date().timeIntervalSince(start), output))
        return 0
    }

    func runVerify(_ console: Console) throws -> Int32 {
        let problems = try PackedSplit.verify(output) { done, total in console.progress(done >> 20, of: max(1, total >> 20), "MiB") }
        console.clearBar()
        let m = try PackManifest.read(output)
        let shards = m.splits.values.reduce(0) { $0 + $1.shards.count }
        if problems.isEmpty {
            console.line("lockstep pack --verify: \(output): \(shards) shard(s), \(m.splits.values.reduce(0) { $0 + $1.count }) records, all checksums match")
            return 0
        }
        for p in problems { printError("lockstep pack --verify: \(p)") }
        printError("lockstep pack --verify: \(output): \(problems.count) problem(s) in \(shards) shard(s); pack the data again")
        return 1
    }
}
