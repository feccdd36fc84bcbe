// When the trainer checkpoints: every N steps, every N epochs, at the end, on a stop signal, and
// the best model so far (best.safetensors). The bytes come from Checkpoint.swift (every rank
// takes part: sums are all-reduced) and are written by rank 0's background CheckpointWriter.
import Collectives
import Datasets
import Formats
import Foundation
import NN
import Optimizers

extension Trainer {
    /// After a step inside an epoch: a periodic checkpoint every `checkpoint.every_steps`, and one
    /// before stopping on a signal. `sums` are this rank's train sums of the epoch so far.
    func checkpointAfterStep(_ run: RunDirectory?, sums: [Double], stopping: Bool) throws {
        guard let run else { return }
        guard (stopping || periodicCheckpoint(after: step)) && step % sampler.stepsPerEpoch != 0 && step < totalSteps else { return }
        try writeCheckpoint(run, try epochCheckpoint(sums: sums, metricsJSON: "{\"step\":\(step)}"))
    }

    /// One step with the checkpoint cadence the epoch loop gives it (the image prepared before,
    /// a periodic checkpoint after), over epoch 0's `order` wrapped around: what `lockstep bench
    /// --against checkpoint.every_steps=0` times against the same steps without checkpoints.
    public func stepWithCheckpoints(order: [Int], run: RunDirectory?) throws {
        try prepareCheckpointImage(run)
        _ = try trainStep(epoch: 0, stepInEpoch: step % sampler.stepsPerEpoch, order: order)
        step += 1
        try checkpointAfterStep(run, sums: [0, 0, 0], stopping: false)
    }

    /// Waits until the checkpoint in flight, if any, is on disk (rethrowing its error).
    public func waitForCheckpoints() throws { try checkpointWriter.wait() }

    /// Rank 0, and the replica rank that keeps a copy on its own host's disk.
    private var writesCheckpoints: Bool { rank == 0 || replicaDirectory != nil }

    private func periodicCheckpoint(after step: Int) -> Bool {
        config.checkpoint.everySteps > 0 && step % config.checkpoint.everySteps == 0
    }

    /// Before a step that ends with a periodic checkpoint, on a rank that writes one, when the
    /// optimizer can fill an image (all of them can) and holds the whole state (not sharded): lays out the
    /// image in the writer's storage and has the step's update stream the parameters and the
    /// optimizer state into it (UpdateMirror). The checkpoint then copies only the buffers: for
    /// the MLP 32 KB instead of 8.07 MB, and the image never passes through the caches.
    func prepareCheckpointImage(_ run: RunDirectory?) throws {
        pendingImage = nil
        let next = step + 1
        guard run != nil, writesCheckpoints, periodicCheckpoint(after: next),
              next % sampler.stepsPerEpoch != 0, next < totalSteps, shards == nil,
              let optimizer = optimizer as? MirroringOptimizer else { return }
        let state = optimizer.state
        let sources = checkpointSources(state: state)
        let counts = sources.map { $0.values.count }
        let roomPages: Int
        if let cached = preparedRoom, cached.counts == counts {
            roomPages = cached.bytes
        } else {
            // The header as it will be, give or take the digits of the step and the sums: 1 KB spare.
            var meta = fixedCheckpointMetadata
            for key in ["step", "epoch", "optimizer_steps"] { meta[key] = "\(Int.max)" }
            meta["epoch_sums"] = [Double](repeating: -Double.greatestFiniteMagnitude, count: 3).map { String($0) }.joined(separator: ",")
            meta["metrics"] = "{\"step\":\(Int.max)}"
            let room = try SafeTensorsFile.header(tensors: sources.map { ($0.name, $0.shape, $0.values.count) }, metadata: meta).count + 1024
            roomPages = (room + directWriteAlignment - 1) / directWriteAlignment * directWriteAlignment
            preparedRoom = (counts, roomPages)
        }
        let storage = try checkpointWriter.storage(bytes: roomPages + counts.reduce(0, +) * MemoryLayout<Float>.stride)
        var image = PreparedImage(storage: storage, room: roomPages, filled: [Bool](repeating: false, count: sources.count))
        let parameters = model.parameters.entries.count, stateStart = model.namedTensors.count
        let mirror = UpdateMirror(values: image.values(at: 0, counts: counts),
                                  state: state.indices.map { image.values(at: stateStart + $0 * parameters, counts: counts) })
        for i in 0..<parameters { image.filled[i] = true }
        for i in stateStart..<sources.count { image.filled[i] = true }
        optimizer.mirror = mirror
        pendingImage = (next, image, mirror)
    }

    /// After an epoch: every `checkpoint.every_epochs` epochs and at the end, and
    /// `best.safetensors` when the epoch is the best so far: on the validation split by the
    /// early-stopping metric (train.early_stopping.metric, val_loss by default, so the file and
    /// a restored early stop agree), or on test accuracy without a split.
    func checkpointAfterEpoch(_ run: RunDirectory?, metrics: EpochMetrics) throws {
        guard let run else { return }
        let every = config.checkpoint.everyEpochs
        let periodic = (every > 0 && metrics.epoch % every == 0) || step == totalSteps
        // Higher is better; the test set is only used when there is no validation split.
        let score: Double
        if let loss = metrics.validationLoss, let accuracy = metrics.validationAccuracy {
            score = config.train.earlyStopping.metric == .valLoss ? -loss : accuracy
        } else {
            score = metrics.testAccuracy
        }
        let best = bestScore.map { score > $0 } ?? true
        if best { bestScore = score }
        guard periodic || best else { return }
        // One serialisation serves both files (the epoch's train sums are complete: 0).
        let json = String(decoding: MetricsCoding.line(metrics), as: UTF8.self)
        let snapshot = try epochCheckpoint(sums: [0, 0, 0], metricsJSON: json)
        try submit(run, snapshot, (periodic ? [Checkpointer.fileName(step: step)] : []) + (best ? ["best.safetensors"] : []), prune: periodic)
    }

    /// The checkpoint of the current state (nil on ranks that write no file). `sums` is this
    /// rank's share of the epoch's train sums; they are all-reduced so the file holds the global
    /// sums. Call on every rank.
    func epochCheckpoint(sums: [Double], metricsJSON: String) throws -> CheckpointSnapshot? {
        enter("checkpoint at step \(step)")
        var global = sums
        try communicator.allReduce(&global)
        // With local BN the file holds the running statistics that evaluation uses.
        // Only the ranks that write a file (rank 0, the replica) copy the state.
        return try withEvaluationBuffers {
            try checkpointSnapshot(epochSums: global, metricsJSON: metricsJSON, take: writesCheckpoints) { try checkpointWriter.storage(bytes: $0) }
        }
    }

    /// Writes `ckpt-step<step>.safetensors` (rank 0) and prunes old ones, on the background
    /// writer (CheckpointWriter.swift): the step goes on while the file is written.
    func writeCheckpoint(_ run: RunDirectory, _ snapshot: CheckpointSnapshot?) throws {
        try submit(run, snapshot, [Checkpointer.fileName(step: step)], prune: true)
    }

    /// Hands `files` (names in the run directory) to the background writer on rank 0, and on the
    /// replica rank (node-local directories) into its own directory.
    func submit(_ run: RunDirectory, _ snapshot: CheckpointSnapshot?, _ names: [String], prune: Bool) throws {
        guard let dir = run.isEnabled ? run.path : replicaDirectory, let snapshot, !names.isEmpty else { return }
        try checkpointWriter.submit(snapshot, to: names.map { (dir as NSString).appendingPathComponent($0) },
                                    prune: prune ? (dir, config.checkpoint.keep) : nil)
    }
}
