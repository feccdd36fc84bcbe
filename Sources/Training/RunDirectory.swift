// The run directory that rank 0 writes: the resolved config, metrics.jsonl, TensorBoard events,
// and checkpoints. Built with `isEnabled: rank == 0`, so call sites never test the rank.
import Foundation

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
            throw ConfigError("\(path): cannot create the run directory (\(error.localizedDescription))")
        }
        // Temporary files of a save that was killed midway are never under a checkpoint's name;
        // clear them away.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] where name.hasPrefix(".") && name.contains(".tmp-") {
            try? FileManager.default.removeItem(atPath: file(name))
        }
        try writeAtomically(Array(resolvedConfig.utf8), to: file("config.yaml"))
        let metricsPath = file("metrics.jsonl")
        if !FileManager.default.fileExists(atPath: metricsPath) {
            FileManager.default.createFile(atPath: metricsPath, contents: nil)
        }
        guard let h = FileHandle(forWritingAtPath: metricsPath) else {
            throw ConfigError("\(metricsPath): cannot open for appending")
        }
        h.seekToEndOfFile()
        metrics = h
        tensorBoard = try TensorBoardWriter(directory: path)
    }

    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Appends one JSON object as a line of metrics.jsonl and its numbers as TensorBoard scalars.
    public func log(_ record: [String: Any], step: Int) {
        guard isEnabled else { return }
        if let data = try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]) {
            metrics?.write(data + Data("\n".utf8))
        }
        let kind = record["kind"] as? String ?? "train"
        let scalars: [(String, Double)] = record.compactMap { key, value in
            guard key != "step", key != "epoch", let v = value as? Double else { return nil }
            return ("\(kind)/\(key)", v)
        }.sorted { $0.0 < $1.0 }
        tensorBoard?.scalars(scalars, step: step)
    }

    /// Default run directory: runs/<name>-<UTC timestamp>.
    public static func defaultPath(name: String) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        f.timeZone = TimeZone(identifier: "UTC")
        return "runs/\(name)-\(f.string(from: Date()))"
    }

    /// The newest run directory of a config name that holds a checkpoint, for `--resume auto`.
    public static func newestRun(name: String, under root: String = "runs") -> String? {
        guard let items = try? FileManager.default.contentsOfDirectory(atPath: root) else { return nil }
        return items.filter { $0.hasPrefix("\(name)-") }.sorted().reversed()
            .map { (root as NSString).appendingPathComponent($0) }
            .first { Checkpointer.newest(in: $0) != nil }
    }
}
