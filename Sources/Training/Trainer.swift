// The trainer: one replica per rank, built from a config, and its training step: next batch,
// forward, loss, backward, synchronise gradients, optimizer update. The epoch loop is in
// EpochLoop.swift; where the other concerns live: Replicas.swift (start-up invariants, the
// gradient sync, stop flag), Evaluation.swift, CheckpointCadence.swift and ResumableRun.swift,
// StepProbe.swift (bench timing).
import Collectives
import Configuration
import Datasets
import Formats
import Foundation
import NN
import Optimizers
import TensorCore

public final class Trainer {
    public let config: TrainingConfig
    public let communicator: TimedCommunicator
    public let model: Model
    public let optimizer: Optimizer
    public let schedule: LearningRateSchedule
    public let sampler: GlobalBatchSampler
    public let console: Console
    let trainLoader: BatchLoader
    let testLoader: BatchLoader
    let validationLoader: BatchLoader
    /// The training split's samples that train, and those held out (data.validation_split).
    let trainIndices: [Int]
    let validationIndices: [Int]
    var earlyStop = EarlyStopState()
    let loss: SoftmaxCrossEntropy
    let seed: UInt64
    /// The data's preprocessing, stored in checkpoints.
    let normalization: InputNormalization
    /// Optimizer steps taken (the next step's index).
    public internal(set) var step = 0
    /// Optimizer steps of the whole run: all epochs, or train.max_steps if that is fewer.
    public let totalSteps: Int
    public internal(set) var history: [EpochMetrics] = []
    /// Seconds spent in the gradient all-reduce since the last reset.
    public var gradientAllReduceSeconds: Double {
        get { sync.collectiveSeconds }
        set { sync.collectiveSeconds = newValue }
    }
    /// Bench measurements inside steps (nil in training).
    public var probe: StepProbe? { didSet { sync.probe = probe } }
    /// How gradients are summed over chunks and ranks (GradientSync.swift), chosen once.
    let sync: GradientSync
    /// optimizer.shard on several ranks: each rank's block of the arena (Sharding.swift).
    let shards: ShardLayout?
    /// The epoch's train sums restored from a checkpoint, which the next `run` continues.
    var resumedSums: [Double]?
    /// The best epoch's score for best.safetensors (higher is better; see checkpointAfterEpoch).
    var bestScore: Double?
    /// Evaluation divides logits by this (a checkpoint's fitted temperature; 1 is none).
    public var temperature: Float = 1
    /// Behaves as if a stop signal arrived right after this step (tests of preemption).
    public var stopAtStep: Int?
    /// Called on every rank after each optimizer step, with that step's numbers (this rank's
    /// share of the samples: sum over ranks for the global figures).
    public var onStep: ((StepEnd) -> Void)?
    /// Called on every rank after each epoch's evaluation, with the epoch's metrics (global).
    public var onEpoch: ((EpochMetrics) -> Void)?
    /// True on every rank when any rank asked to stop during the last step.
    var stopAgreed = false
    let startTime = monotonicSeconds()
    /// Faults that tests of the failure path inject through the environment (FaultInjection.swift).
    let faults: FaultInjection
    /// Writes checkpoint files on a background thread, one at a time (rank 0).
    let checkpointWriter = CheckpointWriter()
    /// Checkpoint metadata that does not change during a run (Checkpoint.swift).
    var fixedMetadataCache: [String: String]?
    /// The image the optimizer fills during the step before a periodic checkpoint (CheckpointCadence).
    var pendingImage: (step: Int, image: PreparedImage, mirror: UpdateMirror)?
    /// The header room of a prepared image, for the tensor sizes it was found for (the same
    /// every checkpoint of a run: worked out once).
    var preparedRoom: (counts: [Int], bytes: Int)?
    /// Checkpoints whose parameters and optimizer state the update wrote (none copied after it).
    public internal(set) var checkpointsFilledByUpdate = 0
    /// On the rank that keeps a copy of every checkpoint (node-local run directories on several
    /// hosts: ResumableRun.swift), its own directory; nil elsewhere.
    var replicaDirectory: String?
    /// Every rank's hostname, in rank order.
    let hosts: [String]
    /// This rank's compute time (steps outside collectives) in the epoch so far, for the
    /// straggler report (EpochLoop.swift).
    var epochComputeSeconds = 0.0

    public var rank: Int { communicator.rank }
    /// How the last step's gradients were summed over the ranks (exact mode's chunk tree in shared
    /// memory or over MPI, or float all-reduces), as `lockstep bench` reports it.
    public var gradientReduction: String { sync.reduction }
    public var worldSize: Int { communicator.size }
    /// Samples per chunk in exact mode; nil on the float path.
    var chunkSize: Int? { sync.chunk }

    public init(config: TrainingConfig, communicator: Communicator, data: TrainingData, console: Console? = nil) throws {
        var config = config
        if config.data.classNames == nil { config.data.classNames = data.classNames }   // image folders name them
        self.config = config
        self.communicator = TimedCommunicator(communicator)
        self.communicator.collectiveTimeout = config.check.collectiveTimeout
        self.console = console ?? Console(isEnabled: communicator.rank == 0)
        seed = UInt64(config.train.seed)
        normalization = data.normalization
        faults = FaultInjection(ProcessInfo.processInfo.environment, rank: communicator.rank)
        let builder = ModelBuilder(batchNormMode: config.bn.mode, communicator: self.communicator,
                                   convAlgorithm: config.conv.algorithm)
        let layers: [Layer]
        do {
            layers = try builder.layers(config.model, inputShape: data.train.sampleShape)
        } catch let e as ShapeError {
            throw ShapeError("\(config.file): model: \(e.message)")
        }
        // Every rank's hostname, gathered once: the memory check counts this host's ranks and
        // optimizer.shard: auto shards across hosts.
        hosts = communicator.size > 1 ? try hostNames(self.communicator) : [hostName()]
        try Self.checkMemory(config, layers: layers, data: data, communicator: self.communicator, hosts: hosts, console: self.console)
        // One spare float after the gradients carries the fast path's stop flag.
        model = Model(layers: layers, inputShape: data.train.sampleShape, spareGradientFloats: 1)
        guard model.outputShape == [config.data.classes] else {
            throw ShapeError("\(config.file): the model's output is \(model.outputShape) but the data has \(config.data.classes) classes; end the model with '- dense: {out: \(config.data.classes)}'")
        }
        model.initialize(seed: seed)
        shards = Self.shouldShard(config, communicator, hosts: hosts) ? ShardLayout(count: model.parameters.count, ranks: communicator.size) : nil
        optimizer = config.optimizer.make(arena: model.parameters, owned: shards?.ranges[communicator.rank])
        sync = Self.makeGradientSync(config, ParameterUpdate(communicator: self.communicator, arena: model.parameters, optimizer: optimizer,
                                                             clipNorm: config.optimizer.clipNorm.map(Float.init), shards: shards))
        (trainIndices, validationIndices) = GlobalBatchSampler.holdout(count: data.train.count, fraction: config.data.validationSplit, seed: seed)
        sampler = GlobalBatchSampler(datasetSize: trainIndices.count, globalBatch: config.train.globalBatch,
                                     seed: seed, shuffle: true, dropLast: config.data.dropLast)
        guard config.train.globalBatch <= trainIndices.count else {
            throw ConfigError("\(config.file): 'train.global_batch' (\(config.train.globalBatch)) is larger than the training set (\(trainIndices.count) samples)")
        }
        let all = config.train.epochs * sampler.stepsPerEpoch
        totalSteps = config.train.maxSteps > 0 ? min(all, config.train.maxSteps) : all
        schedule = config.schedule.make(baseRate: config.optimizer.baseRate(globalBatch: config.train.globalBatch), stepsPerEpoch: sampler.stepsPerEpoch,
                                        totalSteps: totalSteps)
        let chunk = sync.chunk
        let prefetch = { (d: ImageDataset) in config.data.prefetch && d.source != nil }
        trainLoader = BatchLoader(dataset: data.train, augmentation: config.data.augment, seed: seed, padValue: data.padValue, chunk: chunk, prefetch: prefetch(data.train))
        testLoader = BatchLoader(dataset: data.test, seed: seed, padValue: data.padValue, chunk: chunk, prefetch: prefetch(data.test))
        validationLoader = BatchLoader(dataset: data.train, seed: seed, padValue: data.padValue, chunk: chunk, prefetch: prefetch(data.train))
        loss = SoftmaxCrossEntropy(classes: config.data.classes, labelSmoothing: Float(config.train.labelSmoothing))
        try synchronizeStart()
    }

    /// One optimizer step (possibly several micro-batches). Returns the step's loss sums (this
    /// rank's share: see GradientSync.finish).
    public func trainStep(epoch: Int, stepInEpoch: Int, order: [Int]) throws -> LossResult {
        try faults.failIfAt(step: step)
        faults.slowDown()
        enter("step \(step + 1)")
        let global = stepSamples(stepInEpoch, order: order)
        let plan = trainLoader.plan(global, microSteps: config.train.accumulateSteps, rank: rank, worldSize: worldSize)
        try measured(.zeroing) { try sync.begin(plan, stop: localStopRequest) }
        for (m, part) in plan.microBatches.enumerated() {
            if m == plan.microBatches.count - 1 { model.afterLayerBackward = sync.layerHook }   // the last micro-batch finishes the gradients
            defer { model.afterLayerBackward = nil }
            let batch = try measured(.data) { try trainLoader.load(part.indices, epoch: epoch) }
            prefetchAfter(m, of: plan, epoch: epoch, stepInEpoch: stepInEpoch, order: order)
            let logits = try model.forward(batch.x, context: ForwardContext(mode: .training, seed: seed, epoch: epoch, sampleIndices: part.indices,
                                                                            chunking: sync.chunk.map { Chunking(size: $0, firstSlot: part.chunkOffset) } ?? .whole))
            let (r, dLogits) = measured(.loss) {
                batch.labels.withUnsafeBufferPointer { loss.forward(logits: logits, labels: $0, normalizer: global.count) }
            }
            try model.backward(dLogits)
            try sync.add(r, sampleLosses: loss.sampleLosses)
        }
        let (total, stop) = try sync.finish()
        stopAgreed = try sync.update(rate: Float(schedule.rate(at: step))) ?? stop ?? false
        return total
    }

    /// Starts reading the micro-batch after `m` (the next step's first at the end of a step,
    /// within the epoch) while this one computes.
    func prefetchAfter(_ m: Int, of plan: StepPlan, epoch: Int, stepInEpoch: Int, order: [Int]) {
        guard trainLoader.prefetching else { return }
        if m + 1 < plan.microBatches.count { return trainLoader.prefetch(plan.microBatches[m + 1].indices, epoch: epoch) }
        guard stepInEpoch + 1 < sampler.stepsPerEpoch, step + 1 < totalSteps else { return }
        let next = trainLoader.plan(stepSamples(stepInEpoch + 1, order: order), microSteps: config.train.accumulateSteps, rank: rank, worldSize: worldSize)
        trainLoader.prefetch(next.microBatches[0].indices, epoch: epoch)
    }

    /// The dataset indices of a step's global batch: its positions in the epoch's order, mapped
    /// through the training part of the split (the identity without a validation split).
    func stepSamples(_ stepInEpoch: Int, order: [Int]) -> ArraySlice<Int> {
        let positions = sampler.globalBatch(step: stepInEpoch, order: order)
        return validationIndices.isEmpty ? positions : ArraySlice(positions.map { trainIndices[$0] })
    }

    /// Names where training stands for a timed-out collective's message (and the pause hook).
    func enter(_ context: String) {
        communicator.context = context
        faults.pauseIfAt(context)
    }
}
