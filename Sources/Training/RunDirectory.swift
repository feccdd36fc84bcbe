// The run directory that rank 0 writes: the resolved config, metrics.jsonl, TensorBoard events,
// and checkpoints; and which directory and checkpoint a run (or `--resume`) uses. Built with
// `isEnabled: rank == 0`, so call sites never test the rank.
import Formats
import Collectives
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

    /// How a run treats a directory that already holds one.
    public enum Start: Sendable {
        /// Refuse: nothing of the old run is read, replaced or appended to.
        case fresh
        /// Continue it (`--resume`): append to its logs, add checkpoints.
        case resume
        /// Delete the old run's files first (`--overwrite`), then start afresh.
        case overwrite
    }

    /// The files of an earlier run in `path` (those a run writes), sorted. Not `.lockstep.lock`:
    /// that is the lock of whoever writes now (RunLock.swift), taken before this is asked.
    public static func runFiles(in path: String) -> [String] {
        let items = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return items.filter { name in
            ["config.yaml", "metrics.jsonl", "best.safetensors"].contains(name)
                || (name.hasPrefix("ckpt-step") && name.hasSuffix(".safetensors")) || name.hasPrefix("events.out.tfevents.")
        }.sorted()
    }

    /// Why a fresh run cannot start in `path`, or nil when it can.
    public static func conflict(at path: String) -> String? {
        let files = runFiles(in: path)
        guard !files.isEmpty else { return nil }
        let shown = files.prefix(4).joined(separator: ", ") + (files.count > 4 ? " and \(files.count - 4) more" : "")
        return "\(path) already holds a run (\(shown)); continue it with --resume auto, replace it with --overwrite, or choose another output.dir"
    }

    /// Notes for the user from opening the directory (what a cut-back dropped from damaged logs).
    public private(set) var notes: [String] = []

    /// Creates (rank 0) the directory, writes `config.yaml`, and opens the logs for appending.
    /// With `resume` (a resumed run), first cuts the logs back to its step and appends it to
    /// metrics.jsonl (RunHistory.swift). The caller holds the directory's RunLock.
    public init(path: String, isEnabled: Bool, resolvedConfig: String, start: Start = .fresh, resume: ResumeRecord? = nil) throws {
        self.path = path
        self.isEnabled = isEnabled
        guard isEnabled else { return }
        try Self.create(path)
        switch start {
        case .fresh:
            if let conflict = Self.conflict(at: path) { throw RunDirectoryError(conflict) }
        case .resume:
            break
        case .overwrite:
            for name in Self.runFiles(in: path) { try? FileManager.default.removeItem(atPath: (path as NSString).appendingPathComponent(name)) }
        }
        // Temporary files of a save that was killed midway are never under a checkpoint's name;
        // clear them away.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] where name.hasPrefix(".") && name.contains(".tmp-") {
            try? FileManager.default.removeItem(atPath: file(name))
        }
        if start == .resume, let resume { notes = try Self.cutBack(path, to: resume) }
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

    /// Creates the directory `path` (and its parents) unless it exists; an error names the cause.
    public static func create(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw RunDirectoryError("\(path): exists and is not a directory; choose another output.dir") }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            // Name the cause: Foundation's own text is an error domain and a number.
            var ancestor = (path as NSString).deletingLastPathComponent
            var isDir: ObjCBool = false
            while !ancestor.isEmpty && ancestor != "/" {
                if FileManager.default.fileExists(atPath: ancestor, isDirectory: &isDir) {
                    if !isDir.boolValue { throw RunDirectoryError("\(path): cannot create the run directory: \(ancestor) is a file") }
                    break
                }
                ancestor = (ancestor as NSString).deletingLastPathComponent
            }
            throw RunDirectoryError("\(path): cannot create the run directory (no permission, or the disk is full or read-only)")
        }
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
    /// `dir` with each "{host}" replaced by this host's name: a node-local directory per host.
    public static func expandHost(_ dir: String) -> String {
        dir.replacingOccurrences(of: "{host}", with: hostName())
    }

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
