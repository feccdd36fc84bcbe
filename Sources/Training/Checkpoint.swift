// Checkpoints: parameters, buffers, optimizer state and training position in one safetensors
// file, written by rank 0 atomically; restored on every rank from bytes that rank 0 reads and
// broadcasts (no shared filesystem needed).
import Collectives
import Formats
import Foundation
import NN

public enum Checkpointer {
    public static let formatVersion = "1"

    public static func fileName(step: Int) -> String { String(format: "ckpt-step%08d.safetensors", step) }

    /// The newest `ckpt-step*.safetensors` in a directory.
    public static func newest(in dir: String) -> String? {
        guard let items = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return nil }
        return items.filter { $0.hasPrefix("ckpt-step") && $0.hasSuffix(".safetensors") }.sorted().last
            .map { (dir as NSString).appendingPathComponent($0) }
    }

    /// Deletes all but the newest `keep` step checkpoints.
    public static func prune(_ dir: String, keep: Int) {
        guard keep > 0, let items = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        let ckpts = items.filter { $0.hasPrefix("ckpt-step") && $0.hasSuffix(".safetensors") }.sorted()
        for old in ckpts.dropLast(keep) { try? FileManager.default.removeItem(atPath: (dir as NSString).appendingPathComponent(old)) }
    }
}

/// Where training stands inside an epoch when a checkpoint is taken.
public struct TrainingPosition {
    public var step: Int
    /// Local-rank-independent sums for the epoch so far: loss sum, correct, samples (global).
    public var epochSums: [Double]
}

extension Trainer {
    /// The model fingerprint: names and shapes of every parameter and buffer.
    public var modelFingerprint: String {
        var fp = Fingerprint()
        fp.add(model.layoutDescription)
        return String(format: "%016llx", fp.value)
    }

    /// What a deployed model needs besides its weights: the input shape, the preprocessing, the
    /// layers as JSON ("architecture", for loaders in other languages), the class names (and, once calibrated, the temperature, added by `lockstep calibrate`).
    var deploymentMetadata: [String: String] {
        let names = (try? JSONSerialization.data(withJSONObject: config.data.resolvedClassNames)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        return normalization.metadata.merging([
            "input_shape": model.inputShape.map(String.init).joined(separator: ","),
            "class_names": names,
            "data_format": config.data.format.rawValue,
            // The square evaluation samples were cut from (scaled shorter side), for predict.
            "image_resize": String(trainLoader.dataset.storedShape.count == 3 ? trainLoader.dataset.storedShape[1] : 0),
            "architecture": (try? JSONSerialization.data(withJSONObject: portableDescription(model.layers), options: [.sortedKeys]))
                .map { String(decoding: $0, as: UTF8.self) } ?? "[]",
        ]) { $1 }
    }

    /// Serialises the full training state with `metricsJSON` (the latest metrics record) in its
    /// metadata. Call on every rank (a sharded state is gathered); with `encode: false` a rank
    /// takes part in that and returns no bytes (ranks that write no file).
    public func checkpointBytes(epochSums: [Double], metricsJSON: String, encode: Bool = true) throws -> [UInt8] {
        var storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 16)
        defer { storage.deallocate() }
        let snapshot = try checkpointSnapshot(epochSums: epochSums, metricsJSON: metricsJSON, take: encode) { bytes in
            storage = .allocate(byteCount: bytes, alignment: 16)
            return storage
        }
        return try snapshot?.encode() ?? []
    }

    /// The metadata that does not change during a run (built once: the config's YAML and the
    /// architecture's JSON take milliseconds).
    var fixedCheckpointMetadata: [String: String] {
        if let m = fixedMetadataCache { return m }
        let m = deploymentMetadata.merging([
            "format": "lockstep",
            "format_version": Checkpointer.formatVersion,
            "seed": "\(config.train.seed)",
            "global_batch": "\(config.train.globalBatch)",
            "world_size": "\(worldSize)",
            "optimizer": config.optimizer.kind.rawValue,
            "model_fingerprint": modelFingerprint,
            "bn_mode": config.bn.mode.rawValue,
            "config": config.resolvedYAML,
        ]) { $1 }
        fixedMetadataCache = m
        return m
    }

    /// The full training state as a snapshot in `storage(bytes)` (nil when `take` is false: the
    /// rank only takes part in gathering a sharded state).
    func checkpointSnapshot(epochSums: [Double], metricsJSON: String, take: Bool,
                            storage: (Int) throws -> UnsafeMutableRawBufferPointer) throws -> CheckpointSnapshot? {
        var meta = fixedCheckpointMetadata
        meta["step"] = "\(step)"
        meta["epoch"] = "\(step / sampler.stepsPerEpoch)"
        meta["optimizer_steps"] = "\(optimizer.stepCount)"
        meta["epoch_sums"] = epochSums.map { String($0) }.joined(separator: ",")
        meta["metrics"] = metricsJSON
        // The whole arena's state (a sharded step's blocks gathered from every rank).
        return try withFullOptimizerState { state in
            guard take else { return nil }
            let prepared = pendingImage.flatMap { $0.step == step && $0.mirror.written ? $0.image : nil }
            pendingImage = nil
            let snapshot = try CheckpointSnapshot(metadata: meta, sources: checkpointSources(state: state), prepared: prepared, storage: storage)
            if snapshot.usedPreparedImage { checkpointsFilledByUpdate += 1 }
            return snapshot
        }
    }

    /// The tensors of a checkpoint in file order: the parameters (the arena's order, back to
    /// back), the buffers, then each optimizer state tensor per parameter (again the arena's
    /// layout), so that the parameters and each state fill one run of the image.
    func checkpointSources(state: [(name: String, values: UnsafeMutableBufferPointer<Float>)])
        -> [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] {
        var tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] = []
        for p in model.namedTensors { tensors.append((p.name, p.shape, UnsafeBufferPointer(p.values))) }
        for (stateName, buffer) in state {
            for p in model.parameters.entries {
                tensors.append(("optimizer.\(stateName).\(p.name)", p.shape,
                                UnsafeBufferPointer(rebasing: buffer[p.offset..<(p.offset + p.count)])))
            }
        }
        return tensors
    }

    /// Restores from a checkpoint file (rank 0 reads it and broadcasts its bytes): parameters,
    /// buffers, optimizer state, the step, and the epoch's train sums so far, which the next
    /// `run` continues from. Returns those sums.
    @discardableResult
    public func restore(from path: String) throws -> [Double] {
        let file = try SafeTensorsFile(bytes: try readOnRootAndBroadcast(path, communicator: communicator), path: path)
        return try restore(file, path: path)
    }

    /// `resuming: false` (evaluation) skips the checks that only matter for continuing training:
    /// the step within this run's length and the seed.
    @discardableResult
    public func restore(_ file: SafeTensorsFile, path: String, resuming: Bool = true) throws -> [Double] {
        let meta = file.metadata
        guard meta["format"] == "lockstep" else { throw SafeTensorsError("\(path): not a Lockstep checkpoint (no lockstep metadata)") }
        guard meta["format_version"] == Checkpointer.formatVersion else {
            throw SafeTensorsError("\(path): checkpoint format version \(meta["format_version"] ?? "?"), this build reads \(Checkpointer.formatVersion)")
        }
        guard let savedStep = meta["step"].flatMap(Int.init), savedStep >= 0 else {
            throw SafeTensorsError("\(path): metadata 'step' missing or invalid")
        }
        if let gb = meta["global_batch"].flatMap(Int.init), gb != config.train.globalBatch {
            throw SafeTensorsError("\(path): saved with global batch \(gb), this run uses \(config.train.globalBatch); resuming needs the same global batch")
        }
        guard savedStep <= totalSteps || !resuming else {
            throw SafeTensorsError("\(path): metadata 'step' is \(savedStep), beyond this run's \(totalSteps) steps (train.epochs, train.max_steps); the file is corrupt or belongs to a longer run")
        }
        if resuming, let seed = meta["seed"], seed != "\(config.train.seed)" {
            throw SafeTensorsError("\(path): saved with train.seed \(seed), this run uses \(config.train.seed); resuming needs the same seed (data order, augmentation and dropout depend on it)")
        }
        let stored = meta["epoch_sums"].map { $0.split(separator: ",", omittingEmptySubsequences: false).map { Double($0) } }
        if let stored, stored.count != 3 || stored.contains(where: { $0 == nil || !$0!.isFinite || $0! < 0 }) {
            throw SafeTensorsError("\(path): metadata 'epoch_sums' is '\(meta["epoch_sums"]!)', expected three finite non-negative numbers (loss sum, correct, samples)")
        }
        let optimizerSteps = meta["optimizer_steps"].map { Int($0) }
        if let optimizerSteps, optimizerSteps == nil || optimizerSteps! < 0 || optimizerSteps! > savedStep {
            throw SafeTensorsError("\(path): metadata 'optimizer_steps' is '\(meta["optimizer_steps"]!)', expected a whole number between 0 and the step (\(savedStep))")
        }
        // Which tensors are missing, extra, or of another shape.
        var expected: [(name: String, shape: [Int], target: UnsafeMutablePointer<Float>)] = []
        for p in model.namedTensors { expected.append((p.name, p.shape, p.value)) }
        // A sharded optimizer holds its block only: read the whole state, then keep the block.
        let owned = optimizer.owned, whole = owned == 0..<model.parameters.count
        let state = whole ? optimizer.state : optimizer.state.map { s -> (name: String, values: UnsafeMutableBufferPointer<Float>) in
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: model.parameters.count)
            b.initialize(repeating: 0)
            return (s.name, b)
        }
        defer { if !whole { for s in state { s.values.deallocate() } } }
        for (stateName, buffer) in state {
            for p in model.parameters.entries {
                expected.append(("optimizer.\(stateName).\(p.name)", p.shape, buffer.baseAddress! + p.offset))
            }
        }
        let present = Dictionary(uniqueKeysWithValues: file.entries.map { ($0.name, $0) })
        let missing = expected.filter { present[$0.name] == nil }.map { $0.name }
        let wanted = Set(expected.map { $0.name })
        let extra = file.entries.map { $0.name }.filter { !wanted.contains($0) }
        let wrongShape = expected.compactMap { e -> String? in
            guard let f = present[e.name], f.shape != e.shape else { return nil }
            return "\(e.name) \(f.shape) (model has \(e.shape))"
        }
        if !missing.isEmpty || !extra.isEmpty || !wrongShape.isEmpty {
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing \(missing.prefix(5).joined(separator: ", "))\(missing.count > 5 ? " and \(missing.count - 5) more" : "")") }
            if !extra.isEmpty { parts.append("extra \(extra.prefix(5).joined(separator: ", "))\(extra.count > 5 ? " and \(extra.count - 5) more" : "")") }
            if !wrongShape.isEmpty { parts.append("other shape \(wrongShape.prefix(5).joined(separator: "; "))") }
            throw SafeTensorsError("\(path): checkpoint does not match this model/optimizer: \(parts.joined(separator: "; "))")
        }
        // A NaN or infinite value would be accepted silently and poison training or evaluation.
        for e in expected {
            let entry = present[e.name]!
            let values = file.values(entry)
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw SafeTensorsError("\(path): tensor '\(e.name)' holds \(values[bad]) at index \(bad); the checkpoint is corrupt or was saved after training diverged")
            }
        }
        for e in expected { file.copy(present[e.name]!, into: e.target) }
        if !whole {
            for (block, full) in zip(optimizer.state, state) { _ = block.values.update(fromContentsOf: full.values[owned]) }
        }
        optimizer.stepCount = optimizerSteps.flatMap { $0 } ?? savedStep
        step = savedStep
        let sums = stored.map { $0.map { $0! } } ?? [0, 0, 0]
        resumedSums = sums
        return sums
    }
}

/// Reads a file on rank 0 and hands its bytes to every rank; a read error on rank 0 becomes the
/// same error on every rank.
public func readOnRootAndBroadcast(_ path: String, communicator: Communicator) throws -> [UInt8] {
    var bytes: [UInt8] = []
    var readError = ""
    if communicator.rank == 0 {
        if let data = FileManager.default.contents(atPath: path) { bytes = [UInt8](data) } else {
            readError = "\(path): cannot read the checkpoint (missing or unreadable)"
        }
    }
    let message = try communicator.broadcast(bytes: Array(readError.utf8))
    if !message.isEmpty { throw SafeTensorsError(String(decoding: message, as: UTF8.self)) }
    return try communicator.broadcast(bytes: bytes)
}
