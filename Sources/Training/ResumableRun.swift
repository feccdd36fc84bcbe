// How a run starts or continues: `run(resume:)` resolves the run directory and the checkpoint
// to resume (none, the newest, or a path) on rank 0, agrees on them over the ranks, restores the
// state, cuts the logs back to the restored step (one history) and trains to the end.
import Collectives
import Datasets
import Formats
import Foundation
import NN

extension Trainer {
    /// Resolves the run directory and the checkpoint for `resume` (nil, "auto" or a path) on rank
    /// 0, agrees on them, restores the checkpoint, and trains to the end. Run directories without
    /// `output.dir` go under `runsRoot`.
    /// A fresh run refuses a directory that holds an earlier run unless `overwrite` is set; any run
    /// refuses a directory whose RunLock another process holds.
    @discardableResult
    public func run(resume: String?, overwrite: Bool = false, runsRoot: String = "runs") throws -> (plan: RunPlan, history: [EpochMetrics]) {
        // "{host}" in output.dir names each host's own (node-local) directory.
        let outputDir = config.output.dir.map { RunDirectory.expandHost($0) }
        var plan = RunDirectory.plan(name: config.name, outputDir: outputDir, resume: resume, runsRoot: runsRoot)
        // Rank 0 takes the directory's lock before anything is written or deleted (held until
        // this returns or throws), then looks at the directory; every rank gets the same verdict.
        var lock: RunLock?
        defer { lock?.release() }
        var refusal = ""
        if rank == 0 {
            do {
                lock = try RunLock(directory: plan.directory)
                for warning in lock?.warnings ?? [] { console.line(warning) }
                if resume == nil && !overwrite, let conflict = RunDirectory.conflict(at: plan.directory) { refusal = conflict }
            } catch {
                refusal = "\(error)"
            }
        }
        let verdict = String(decoding: try communicator.broadcast(bytes: Array(refusal.utf8)), as: UTF8.self)
        if !verdict.isEmpty { throw RunDirectoryError(verdict) }
        plan.directory = String(decoding: try communicator.broadcast(bytes: Array(plan.directory.utf8)), as: UTF8.self)
        let checkpoint = String(decoding: try communicator.broadcast(bytes: Array((plan.checkpoint ?? "").utf8)), as: UTF8.self)
        plan.checkpoint = checkpoint.isEmpty ? nil : checkpoint
        if let note = plan.note { console.line("lockstep: \(note)") }
        if let checkpoint = plan.checkpoint {
            try restore(from: checkpoint)
            console.line("lockstep: resumed from \(checkpoint) at step \(step)")
        }
        let start: RunDirectory.Start = resume != nil ? .resume : (overwrite ? .overwrite : .fresh)
        // A resumed run's logs are cut back to the restored step (step 0 without a checkpoint).
        let record = start == .resume ? ResumeRecord(step: step, worldSize: worldSize) : nil
        let directory = try RunDirectory(path: plan.directory, isEnabled: rank == 0, resolvedConfig: config.resolvedYAML, start: start, resume: record)
        try setUpReplica(outputDir: outputDir)
        for note in directory.notes { console.line("lockstep: \(note)") }
        console.line(model.summary)
        console.line("run directory: \(plan.directory)")
        return (plan, try run(directory: directory))
    }

    /// With node-local run directories ("{host}" in output.dir) on several hosts, the first rank
    /// of the next host after rank 0's keeps a copy of every checkpoint in its own directory, so
    /// losing rank 0's host loses no checkpoint: a restart with rank 0 on that host resumes from
    /// the copy. Every rank holds the whole state, so the copy costs no communication.
    func setUpReplica(outputDir: String?) throws {
        guard let template = config.output.dir, template.contains("{host}"), let dir = outputDir,
              let replica = hosts.indices.first(where: { hosts[$0] != hosts[0] }) else { return }
        if rank == replica {
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            } catch {
                throw RunDirectoryError("\(dir): cannot create the checkpoint replica's directory (\(error.localizedDescription))")
            }
            replicaDirectory = dir
        }
        console.line("lockstep: checkpoints also kept by rank \(replica) on \(hosts[replica]) (output.dir has {host})")
    }
}
