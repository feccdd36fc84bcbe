// The run directory that rank 0 writes: the resolved config, metrics.jsonl, TensorBoard events,
// and checkpoints; and which directory and checkpoint a run (or `--resume`) uses. Built with
// `isEnabled: rank == 0`, so call sites never test the rank.
import Foundation

/// A run directory that cannot be created or written.
public struct RunDirectoryError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Where a run writes and the checkpoint it continues from.
public struct RunPlan: Equatable, Sendable {
    public var directory: String
    /// The checkpoint to resume from, or nil to start from scratch.
    public var checkpoint: String?
    /// Something to tell the user (for example that `--resume auto` found nothing).
    public var note: String?
}

public final class RunDirectory {
    public let path: String
    public let isEnabled: Bool
    var metrics: FileHandle?
    var tensorBoard: TensorBoardWriter?

    /// Creates (rank 0) the directory, writes `config.yaml`, and opens the logs for appending.
    public init(path: String, isEnabled: Bool, resolvedConfig: String) throws {
        self.path = path
        self.isEnabled = isEnabled
        guard isEnabled else { return }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw RunDirectoryError("\(path): cannot create the run directory (\(error.localizedDescription))")
        }
        // Temporary files of a save that was killed midway are never under a checkpoint's name;
        // clear them away.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] where name.hasPrefix(".") && name.contains(".tmp-") {
            try? FileManager.default.removeItem(atPath: file(name))
        }
        try writeAtomically(Array(resolvedConfig.utf8), to: file("config.yaml"))
        let metricsPath = file("metrics.jsonl")
        if !FileManager.default.fileExists(atPath: metricsPath) {
            _ = FileManager.default.createFile(atPath: metricsPath, contents: nil)
        }
        guard let h = FileHandle(forWritingAtPath: metricsPath) else {
            throw RunDirectoryError("\(metricsPath): cannot open for appending")
        }
        h.seekToEndOfFile()
        metrics = h
        tensorBoard = try TensorBoardWriter(directory: path)
    }

    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Appends a record (EpochMetrics, TrainProgress) as a line of metrics.jsonl and its numbers
    /// as TensorBoard scalars under `<kind>/<key>`.
    public func log<Record: Encodable>(_ record: Record, kind: String, step: Int) {
        guard isEnabled else { return }
        let line = MetricsCoding.line(record)
        metrics?.write(line + Data("\n".utf8))
        tensorBoard?.scalars(MetricsCoding.numbers(line).map { ("\(kind)/\($0.0)", $0.1) }, step: step)
    }

    /// Default run directory: runs/<name>-<UTC timestamp>.
    public static func defaultPath(name: String, root: String = "runs") -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        f.timeZone = TimeZone(identifier: "UTC")
        return "\(root)/\(name)-\(f.string(from: Date()))"
    }

    /// The run directory and checkpoint for a run of config `name` writing to `outputDir` (nil:
    /// a new `runs/<name>-<timestamp>`): `resume` is nil (start afresh), "auto" (the newest
    /// checkpoint of `outputDir`, or of the newest `runs/<name>-*` holding one) or a path (whose
    /// directory the run continues in unless `outputDir` is set).
    public static func plan(name: String, outputDir: String?, resume: String?, runsRoot: String = "runs") -> RunPlan {
        var plan = RunPlan(directory: outputDir ?? defaultPath(name: name, root: runsRoot), checkpoint: nil, note: nil)
        switch resume {
        case nil:
            break
        case "auto"?:
            if outputDir == nil, let previous = newestRun(name: name, under: runsRoot) { plan.directory = previous }
            plan.checkpoint = Checkpointer.newest(in: plan.directory)
            if plan.checkpoint == nil { plan.note = "--resume auto found no checkpoint in \(plan.directory); starting from scratch" }
        case let path?:
            plan.checkpoint = path
            if outputDir == nil { plan.directory = (path as NSString).deletingLastPathComponent }
        }
        return plan
    }

    /// The newest run directory of a config name that holds a checkpoint, for `--resume auto`.
    public static func newestRun(name: String, under root: String = "runs") -> String? {
        guard let items = try? FileManager.default.contentsOfDirectory(atPath: root) else { return nil }
        return items.filter { $0.hasPrefix("\(name)-") }.sorted().reversed()
            .map { (root as NSString).appendingPathComponent($0) }
            .first { Checkpointer.newest(in: $0) != nil }
    }
}
