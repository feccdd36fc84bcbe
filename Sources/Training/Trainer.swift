// The training loop: one replica per rank, global batches, gradient all-reduce, evaluation.
import Collectives
import Datasets
import Foundation
import NN
import Optimizers
import TensorCore

/// The training and test splits, loaded once per process and shared by simulated ranks.
public struct TrainingData: @unchecked Sendable {
    public let train: ImageDataset
    public let test: ImageDataset
    /// The value a black (zero) pixel has after normalisation: used to pad random crops.
    public let padValue: Float

    public init(train: ImageDataset, test: ImageDataset, padValue: Float) {
        self.train = train
        self.test = test
        self.padValue = padValue
    }

    public static func load(_ config: TrainingConfig) throws -> TrainingData {
        let dir = config.data.path
        let trainImages = try ImageDataset.findFile(dir, "\(config.data.trainSplit)-images-idx3-ubyte")
        let trainLabels = try ImageDataset.findFile(dir, "\(config.data.trainSplit)-labels-idx1-ubyte")
        let testImages = try ImageDataset.findFile(dir, "\(config.data.testSplit)-images-idx3-ubyte")
        let testLabels = try ImageDataset.findFile(dir, "\(config.data.testSplit)-labels-idx1-ubyte")
        // Without data.normalize, the statistics come from the training split (identical on
        // every rank) and the test split is normalised with them.
        let train = try ImageDataset.load(imagesPath: trainImages, labelsPath: trainLabels, name: "train",
                                          classes: config.data.classes, mean: config.data.mean.map(Float.init),
                                          std: config.data.std.map(Float.init))
        let mean = train.mean!, std = train.std!
        let test = try ImageDataset.load(imagesPath: testImages, labelsPath: testLabels, name: "test",
                                         classes: config.data.classes, mean: mean, std: std)
        guard train.sampleShape == test.sampleShape else {
            throw DataError("\(testImages): test images are \(test.sampleShape), training images \(train.sampleShape)")
        }
        return TrainingData(train: train, test: test, padValue: (0 - mean) / std)
    }
}

public struct EpochMetrics: Codable {
    public var epoch: Int
    public var step: Int
    public var learningRate: Double
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var testLoss: Double
    public var testAccuracy: Double
    public var testSamples: Int
    public var expectedCalibrationError: Double
    public var samplesPerSecond: Double
    public var secondsPerStep: Double
    public var communicationSecondsPerStep: Double
    public var elapsedSeconds: Double
    public var runningMeanSpread: Double?
    public var runningVarSpread: Double?
}

public struct EvaluationResult {
    public var loss: Double
    public var accuracy: Double
    public var count: Int
    public var perClassCorrect: [Int]
    public var perClassCount: [Int]
    /// Expected calibration error over 15 equal-width confidence bins (Guo et al. 2017).
    public var expectedCalibrationError: Double
    /// Mean confidence minus accuracy: > 0 over-confident, < 0 under-confident.
    public var overconfidence: Double
}

public final class Trainer {
    public let config: TrainingConfig
    public let communicator: TimedCommunicator
    public let model: Model
    public let optimizer: Optimizer
    public let schedule: LearningRateSchedule
    public let sampler: GlobalBatchSampler
    public let console: Console
    let data: TrainingData
    let loss: SoftmaxCrossEntropy
    let seed: UInt64
    public private(set) var step = 0
    public private(set) var history: [EpochMetrics] = []
    var batch: Tensor?         // (n, C, H, W)
    var labels: [Int32] = []
    /// Seconds spent assembling batches, in the loss, and in the optimizer (with zeroing gradients).
    public var phaseSeconds = (data: 0.0, loss: 0.0, optimizer: 0.0)
    /// Per-step gradient all-reduce times, kept while `recordAllReduceTimes` is set (bench).
    public var recordAllReduceTimes = false
    public var allReduceTimes: [Double] = []
    public var skewWaitSeconds = 0.0
    public var bareAllReduceTimes: [Double] = []
    var bareScratch: [Float] = []
    lazy var exactReducer = ExactGradientReducer(arena: model.parameters)
    /// Seconds spent in the gradient all-reduce since the last reset.
    public private(set) var gradientAllReduceSeconds = 0.0
    /// Exact mode: seconds spent finding scales, quantising chunk slots and decoding the sums.
    public var exactSumSeconds = 0.0
    let startTime = now()
    /// Fault injection for tests of the failure path: LOCKSTEP_FAULT_RANK=r LOCKSTEP_FAULT_STEP=s
    /// makes rank r throw at step s.
    let injectedFaultStep: Int?

    public var rank: Int { communicator.rank }
    public var worldSize: Int { communicator.size }

    public init(config: TrainingConfig, communicator: Communicator, data: TrainingData, console: Console? = nil) throws {
        self.config = config
        self.communicator = TimedCommunicator(communicator)
        self.data = data
        self.console = console ?? Console(isEnabled: communicator.rank == 0)
        seed = UInt64(config.train.seed)
        let env = ProcessInfo.processInfo.environment
        if let r = env["LOCKSTEP_FAULT_RANK"].flatMap(Int.init), r == communicator.rank {
            injectedFaultStep = env["LOCKSTEP_FAULT_STEP"].flatMap(Int.init) ?? 0
        } else {
            injectedFaultStep = nil
        }
        let builder = ModelBuilder(batchNormMode: config.bn.mode, communicator: self.communicator)
        do {
            model = try builder.build(config.model, inputShape: data.train.sampleShape)
        } catch let e as ShapeError {
            throw ShapeError("\(config.file): model: \(e.message)")
        }
        guard model.outputShape == [config.data.classes] else {
            throw ShapeError("\(config.file): the model's output is \(model.outputShape) but the data has \(config.data.classes) classes; end the model with '- dense: {out: \(config.data.classes)}'")
        }
        model.initialize(seed: seed)
        let o = config.optimizer
        switch o.kind {
        case .sgd:
            optimizer = SGD(arena: model.parameters, momentum: Float(o.momentum), weightDecay: Float(o.weightDecay),
                            nesterov: o.nesterov, decayWeightsOnly: o.decayWeightsOnly)
        case .adam, .adamw:
            optimizer = Adam(arena: model.parameters, beta1: Float(o.beta1), beta2: Float(o.beta2),
                             epsilon: Float(o.epsilon), weightDecay: Float(o.weightDecay),
                             decoupled: o.kind == .adamw, decayWeightsOnly: o.decayWeightsOnly)
        }
        sampler = GlobalBatchSampler(datasetSize: data.train.count, globalBatch: config.train.globalBatch,
                                     seed: seed, shuffle: true, dropLast: config.data.dropLast)
        guard sampler.stepsPerEpoch > 0 else {
            throw ConfigError("\(config.file): 'train.global_batch' (\(config.train.globalBatch)) is larger than the training set (\(data.train.count)) with data.drop_last")
        }
        let steps = sampler.stepsPerEpoch
        let s = config.schedule
        let all = config.train.epochs * steps
        totalSteps = config.train.maxSteps > 0 ? min(all, config.train.maxSteps) : all
        schedule = LearningRateSchedule(kind: s.kind, baseRate: o.learningRate, totalSteps: totalSteps,
                                        warmupSteps: Int((s.warmupEpochs * Double(steps)).rounded()),
                                        stepSize: Int((s.stepEpochs * Double(steps)).rounded()),
                                        gamma: s.gamma, minRate: s.minRate)
        loss = SoftmaxCrossEntropy(classes: config.data.classes, labelSmoothing: Float(config.train.labelSmoothing))
        try synchronizeStart()
    }

    /// Optimizer steps of the whole run: all epochs, or train.max_steps if that is fewer.
    public let totalSteps: Int

    /// Start-up invariants: every rank runs the same config and model layout, and starts from
    /// rank 0's parameters and buffers.
    func synchronizeStart() throws {
        var fp = Fingerprint()
        fp.add(config.resolvedYAML)
        fp.add(model.layoutDescription)
        try communicator.checkSame(fp.value, what: "the configuration or model layout")
        if config.train.exact {
            // Exact mode's bits come from one sgemm kernel: every rank must run the same one, and
            // one BLAS thread per rank (a threaded sgemm may split its work differently).
            if blasThreadCount() > 1 {
                setBLASThreadCount(1)
                console.line("lockstep: exact mode runs OpenBLAS with one thread per rank (start more ranks to use more cores, or set train.exact: false)")
            }
            var core = Fingerprint()
            core.add(blasCoreName())
            do {
                try communicator.checkSame(core.value, what: "the OpenBLAS kernel")
            } catch is CollectiveError {
                throw CollectiveError(failedRank: rank, message: "exact mode needs the same OpenBLAS kernel on every rank, and this rank's (\(blasCoreName())) differs from another's; set OPENBLAS_CORETYPE to one kernel every node can run, or set train.exact: false")
            }
        }
        try communicator.broadcast(UnsafeMutableRawBufferPointer(model.parameters.flatValues), root: 0)
        try communicator.broadcast(UnsafeMutableRawBufferPointer(model.buffers.flatValues), root: 0)
    }

    func setStep(_ s: Int) { step = s }

    /// Behaves as if a stop signal arrived right after this step (tests of preemption).
    public var stopAtStep: Int?
    /// True on every rank when any rank asked to stop during the last step (decided with the
    /// gradient all-reduce, so every rank agrees).
    var stopAgreed = false

    /// Trains to the end (epochs or max_steps), evaluating after every epoch; checkpoints and
    /// logs into `run` (rank 0). `epochSums` continues a resumed epoch's train metrics.
    @discardableResult
    public func run(directory run: RunDirectory? = nil, epochSums resumedSums: [Double]? = nil) throws -> [EpochMetrics] {
        let steps = sampler.stepsPerEpoch
        console.line("lockstep: \(config.name) on \(worldSize) rank(s) [\(communicator.kind)], bn \(config.bn.mode.rawValue), global batch \(config.train.globalBatch), \(steps) steps/epoch, \(totalSteps) steps, \(model.parameterCount) parameters" + (step > 0 ? ", resuming at step \(step)" : ""))
        var pendingSums = resumedSums.map { rank == 0 ? $0 : [0, 0, 0] }
        var bestAccuracy = -1.0
        while step < totalSteps {
            let epoch = step / steps
            let epochStart = now()
            communicator.reset()
            gradientAllReduceSeconds = 0
            var sums = pendingSums ?? [0.0, 0.0, 0.0]   // loss sum, correct, samples (this rank's share)
            pendingSums = nil
            let order = sampler.permutation(epoch: epoch)
            var stepsThisEpoch = 0
            var logSums = [0.0, 0.0, 0.0]
            while step < totalSteps && step / steps == epoch {
                let r = try trainStep(epoch: epoch, stepInEpoch: step % steps, order: order)
                guard r.lossSum.isFinite else {
                    throw TrainingDiverged(message: "training diverged: the loss is \(r.lossSum) at step \(step) (epoch \(epoch + 1)); lower optimizer.lr, add schedule.warmup_epochs or set optimizer.clip_norm")
                }
                sums[0] += r.lossSum; sums[1] += Double(r.correct); sums[2] += Double(r.count)
                logSums[0] += r.lossSum; logSums[1] += Double(r.correct); logSums[2] += Double(r.count)
                step += 1
                stepsThisEpoch += 1
                if config.check.replicasEvery > 0 && step % config.check.replicasEvery == 0 { try checkReplicas() }
                if config.train.logEvery > 0 && step % config.train.logEvery == 0 {
                    try communicator.allReduce(&logSums)
                    let loss = logSums[0] / max(logSums[2], 1), acc = logSums[1] / max(logSums[2], 1)
                    if !console.isTerminal {
                        console.line(String(format: "  step %d/%d  loss %.4f  acc %.2f%%  lr %.5f", step, totalSteps, loss, 100 * acc, schedule.rate(at: step - 1)))
                    }
                    run?.log(["kind": "train", "step": step, "epoch": Double(step) / Double(steps), "lr": schedule.rate(at: step - 1),
                              "train_loss": loss, "train_accuracy": acc], step: step)
                    logSums = [0, 0, 0]
                }
                console.progress(step % steps == 0 ? steps : step % steps, of: steps,
                                 String(format: "epoch %d  loss %.4f", epoch + 1, sums[0] / max(sums[2], 1)))
                let stop = stopAgreed
                let periodic = config.checkpoint.everySteps > 0 && step % config.checkpoint.everySteps == 0
                if let run, (stop || periodic) && step % steps != 0 && step < totalSteps {
                    try writeCheckpoint(run, try epochCheckpointBytes(sums: sums, metrics: ["step": step]))
                }
                if stop {
                    console.line("lockstep: stopping at step \(step) on a signal; resume with --resume auto")
                    throw Preempted(step: step)
                }
            }
            let trainSeconds = now() - epochStart
            let commSeconds = communicator.seconds
            var globalSums = sums
            try communicator.allReduce(&globalSums)
            try checkReplicas()
            let spread = try localStatisticsSpread()
            let eval = try evaluate()
            let m = EpochMetrics(
                epoch: epoch + 1, step: step, learningRate: schedule.rate(at: step - 1),
                trainLoss: globalSums[0] / max(globalSums[2], 1), trainAccuracy: globalSums[1] / max(globalSums[2], 1),
                testLoss: eval.loss, testAccuracy: eval.accuracy, testSamples: eval.count,
                expectedCalibrationError: eval.expectedCalibrationError,
                samplesPerSecond: globalSums[2] / trainSeconds,
                secondsPerStep: trainSeconds / Double(max(stepsThisEpoch, 1)),
                communicationSecondsPerStep: commSeconds / Double(max(stepsThisEpoch, 1)),
                elapsedSeconds: now() - startTime,
                runningMeanSpread: spread?.mean, runningVarSpread: spread?.variance)
            history.append(m)
            let comm = worldSize > 1 ? String(format: "  comm %.1f ms/step", 1000 * m.communicationSecondsPerStep) : ""
            console.line(String(format: "epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  ece %.3f  lr %.5f  %.0f samples/s",
                                m.epoch, (totalSteps + steps - 1) / steps, m.trainLoss, 100 * m.trainAccuracy, m.testLoss,
                                100 * m.testAccuracy, m.expectedCalibrationError, m.learningRate, m.samplesPerSecond)
                         + comm + String(format: "  %.1fs", m.elapsedSeconds))
            var record: [String: Any] = [
                "kind": "epoch", "epoch": m.epoch, "step": m.step, "lr": m.learningRate,
                "train_loss": m.trainLoss, "train_accuracy": m.trainAccuracy,
                "test_loss": m.testLoss, "test_accuracy": m.testAccuracy, "test_samples": m.testSamples,
                "ece": m.expectedCalibrationError, "overconfidence": eval.overconfidence,
                "samples_per_second": m.samplesPerSecond, "seconds_per_step": m.secondsPerStep,
                "communication_seconds_per_step": m.communicationSecondsPerStep,
                "gradient_allreduce_seconds_per_step": gradientAllReduceSeconds / Double(max(stepsThisEpoch, 1)),
                "elapsed_seconds": m.elapsedSeconds, "world_size": worldSize, "bn_mode": config.bn.mode.rawValue,
            ]
            if let spread { record["running_mean_spread"] = spread.mean; record["running_var_spread"] = spread.variance }
            run?.log(record, step: step)
            if let run {
                let every = config.checkpoint.everyEpochs
                let periodic = (every > 0 && (epoch + 1) % every == 0) || step == totalSteps
                let best = eval.accuracy > bestAccuracy
                if best { bestAccuracy = eval.accuracy }
                if periodic || best {
                    // One serialisation serves both files (the epoch's train sums are complete: 0).
                    let bytes = try epochCheckpointBytes(sums: [0, 0, 0], metrics: record)
                    if periodic { try writeCheckpoint(run, bytes) }
                    if best && run.isEnabled { try writeAtomically(bytes, to: run.file("best.safetensors")) }
                }
            }
        }
        return history
    }

    /// The checkpoint of the current state. `sums` is this rank's share of the epoch's train sums;
    /// they are all-reduced so the file holds the global sums. Call on every rank.
    func epochCheckpointBytes(sums: [Double], metrics: [String: Any]) throws -> [UInt8] {
        var global = sums
        try communicator.allReduce(&global)
        // With local BN the file holds the running statistics that evaluation uses.
        return try withEvaluationBuffers { try checkpointBytes(epochSums: global, metrics: metrics) }
    }

    /// Writes `ckpt-step<step>.safetensors` (rank 0) and prunes old ones.
    func writeCheckpoint(_ run: RunDirectory, _ bytes: [UInt8]) throws {
        guard run.isEnabled else { return }
        try writeAtomically(bytes, to: run.file(Checkpointer.fileName(step: step)))
        Checkpointer.prune(run.path, keep: config.checkpoint.keep)
    }

    /// This rank's wish to stop: a signal arrived, or `stopAtStep` is reached after this step.
    var localStopRequest: Bool { StopSignal.requested || step + 1 == stopAtStep }

    /// Samples per chunk in exact mode; nil on the fast path.
    var chunkSize: Int? { config.train.exact ? config.train.chunk : nil }

    /// One micro-batch of a step as this rank sees it: its samples and how layers chunk them.
    struct MicroBatch {
        var indices: [Int]
        var chunking: Chunking
    }

    /// This rank's share of each micro-batch of a global batch, and the global batch's chunks.
    func plan(_ global: ArraySlice<Int>) -> (micro: [MicroBatch], slots: Int, totalChunks: Int) {
        let micro = config.train.accumulateSteps
        var result: [MicroBatch] = []
        var slot = 0, totalChunks = 0
        for k in 0..<micro {
            let part = GlobalBatchSampler.shard(total: global.count, chunk: chunkSize, rank: k, worldSize: micro)
            let microBatch = global[(global.startIndex + part.lowerBound)..<(global.startIndex + part.upperBound)]
            let mine = GlobalBatchSampler.shard(total: microBatch.count, chunk: chunkSize, rank: rank, worldSize: worldSize)
            let indices = Array(microBatch[(microBatch.startIndex + mine.lowerBound)..<(microBatch.startIndex + mine.upperBound)])
            let chunking = chunkSize.map { Chunking(size: $0, firstSlot: slot) } ?? .whole
            result.append(MicroBatch(indices: indices, chunking: chunking))
            slot += chunking.count(indices.count)
            totalChunks += chunkSize.map { (microBatch.count + $0 - 1) / $0 } ?? 0
        }
        return (result, slot, totalChunks)
    }

    /// One optimizer step (possibly several micro-batches). Returns this rank's loss sums (in
    /// exact mode rank 0 returns the global sums and the other ranks zeros, so that summing over
    /// ranks gives the global sums exactly).
    public func trainStep(epoch: Int, stepInEpoch: Int, order: [Int]) throws -> LossResult {
        if let fault = injectedFaultStep, fault == step {
            throw ConfigError("injected fault at step \(step) (LOCKSTEP_FAULT_RANK/LOCKSTEP_FAULT_STEP)")
        }
        let global = sampler.globalBatch(step: stepInEpoch, order: order)
        let (micro, slots, totalChunks) = plan(global)
        var total = LossResult(lossSum: 0, correct: 0, count: 0)
        var extras = [Int64](repeating: 0, count: ExactSum.width + 2)   // exact mode: loss, correct, count
        let tz = now()
        model.zeroGrads()
        if config.train.exact {
            model.parameters.useChunkSlots(slots)
            model.parameters.zeroSlots(slots)
        }
        phaseSeconds.optimizer += now() - tz
        for part in micro {
            var t0 = now()
            let x = assemble(part.indices, from: data.train, epoch: epoch, augment: config.data.augment)
            phaseSeconds.data += now() - t0
            let context = ForwardContext(mode: .training, seed: seed, epoch: epoch, sampleIndices: part.indices,
                                         chunking: part.chunking)
            let logits = try model.forward(x, context: context)
            t0 = now()
            let (r, dLogits) = labels.withUnsafeBufferPointer {
                loss.forward(logits: logits, labels: $0, normalizer: global.count)
            }
            if config.train.exact {
                extras.withUnsafeMutableBufferPointer { e in
                    for l in loss.sampleLosses { ExactSum.add(l, into: e.baseAddress!) }
                }
                extras[ExactSum.width] += Int64(r.correct)
                extras[ExactSum.width + 1] += Int64(r.count)
            }
            phaseSeconds.loss += now() - t0
            try model.backward(dLogits)
            total.lossSum += r.lossSum; total.correct += r.correct; total.count += r.count
        }
        if config.train.exact {
            total = try reduceExactly(slots: slots, totalChunks: totalChunks, extras: &extras)
        } else if worldSize > 1 {
            try reduceGradients()
        } else {
            stopAgreed = localStopRequest
        }
        if let maxNorm = config.optimizer.clipNorm { clipGradientNorm(model.parameters, maxNorm: Float(maxNorm)) }
        let t0 = now()
        optimizer.step(rate: Float(schedule.rate(at: step)))
        phaseSeconds.optimizer += now() - t0
        return total
    }

    /// Exact mode: chunk slots summed in integers over chunks and ranks (ExactGradientReducer);
    /// the step's loss (ExactSum words), correct and sample counts ride along, so every rank
    /// learns the global sums. Returns them on rank 0 and zeros elsewhere.
    func reduceExactly(slots: Int, totalChunks: Int, extras: inout [Int64]) throws -> LossResult {
        let w = ExactSum.width
        let t0 = now(), c0 = communicator.seconds
        let outcome = try exactReducer.reduce(slotCount: slots, totalChunks: totalChunks, stop: localStopRequest,
                                              extras: &extras, communicator: communicator)
        // Its two collectives count as the gradient all-reduce; the rest is arithmetic.
        let collective = communicator.seconds - c0
        gradientAllReduceSeconds += collective
        exactSumSeconds += now() - t0 - collective
        stopAgreed = outcome.stop
        let lossSum = outcome.nonFinite ? .nan : extras.withUnsafeBufferPointer { ExactSum.value($0.baseAddress!) }
        guard lossSum.isFinite else {
            throw TrainingDiverged(message: "training diverged: the loss or a gradient is not finite at step \(step) (epoch \(step / sampler.stepsPerEpoch + 1)); lower optimizer.lr, add schedule.warmup_epochs or set optimizer.clip_norm")
        }
        return rank == 0 ? LossResult(lossSum: lossSum, correct: Int(extras[w]), count: Int(extras[w + 1]))
                         : LossResult(lossSum: 0, correct: 0, count: 0)
    }

    /// The fast path's gradient all-reduce: one float sum over ranks (order-dependent bits).
    func reduceGradients() throws {
        if recordAllReduceTimes {
            // Bench only: separate waiting for the slowest rank from the all-reduce itself.
            let tb = now()
            try communicator.inner.barrier()
            skewWaitSeconds += now() - tb
        }
        // The stop flag rides in the spare float after the gradients: any rank's signal
        // reaches every rank with no extra collective.
        let spare = model.parameters.gradsWithSpare
        spare[spare.count - 1] = localStopRequest ? 1 : 0
        let t0 = now()
        try communicator.allReduce(spare, op: .sum)
        let dt = now() - t0
        gradientAllReduceSeconds += dt
        if recordAllReduceTimes {
            allReduceTimes.append(dt)
            // Bench only: a bare all-reduce of the same bytes, in the same cache state, on the
            // inner communicator (MPI_Allreduce under MPI), interleaved with training.
            let n = model.parameters.count + 1
            if bareScratch.count != n { bareScratch = [Float](repeating: 0, count: n) }
            bareScratch.withUnsafeMutableBufferPointer { $0.update(from: spare) }
            try communicator.inner.barrier()
            let tb = now()
            try bareScratch.withUnsafeMutableBufferPointer { try communicator.inner.allReduce($0, op: .sum) }
            bareAllReduceTimes.append(now() - tb)
        }
        stopAgreed = spare.last! > 0
    }

    /// Copies samples of `ds` into the batch tensor and their labels into `labels`, augmented
    /// (keyed by sample index and epoch) when `augment` is given.
    func assemble(_ indices: [Int], from ds: ImageDataset, epoch: Int, augment: Augmentation?) -> Tensor {
        let x = reuse(&batch, [indices.count] + ds.sampleShape)
        labels.removeAll(keepingCapacity: true)
        for (i, index) in indices.enumerated() {
            let dst = x.data + i * ds.sampleSize
            if let aug = augment, !aug.isIdentity {
                aug.apply(dataset: ds, index: index, epoch: epoch, seed: seed, padValue: data.padValue, into: dst)
            } else {
                ds.copySample(index, into: dst)
            }
            labels.append(ds.labels[index])
        }
        return x
    }

    /// Exact distributed evaluation: each rank takes a disjoint contiguous part of the test set;
    /// sums are all-reduced, so every sample counts exactly once.
    public func evaluate() throws -> EvaluationResult {
        return try withEvaluationBuffers {
            let test = data.test
            // Exact mode: ranks hold whole chunks and evaluate chunk by chunk, and sums are exact,
            // so the results have the same bits for any number of ranks and any eval_batch.
            let chunk = chunkSize
            let mine = GlobalBatchSampler.shard(total: test.count, chunk: chunk, rank: rank, worldSize: worldSize)
            let evalBatch = chunk.map { max($0, config.data.evalBatch / $0 * $0) } ?? config.data.evalBatch
            let chunking = chunk.map { Chunking(size: $0) } ?? .whole
            let classes = config.data.classes
            let bins = 15
            // [loss, correct, count, perClassCorrect (K), perClassCount (K), bin count, bin confidence, bin correct (3·bins)]
            var accumulated = MetricSums(count: 3 + 2 * classes + 3 * bins, exact: config.train.exact)
            var start = mine.lowerBound
            while start < mine.upperBound {
                let end = min(start + evalBatch, mine.upperBound)
                let indices = Array(start..<end)
                let x = assemble(indices, from: data.test, epoch: 0, augment: nil)
                let logits = try model.forward(x, context: ForwardContext(mode: .evaluation, seed: seed, sampleIndices: indices,
                                                                          chunking: chunking))
                let (r, _) = labels.withUnsafeBufferPointer { loss.forward(logits: logits, labels: $0, normalizer: 1) }
                if accumulated.exact {
                    for l in loss.sampleLosses { accumulated.add(0, l) }
                } else {
                    accumulated.add(0, r.lossSum)
                }
                accumulated.add(1, Double(r.correct)); accumulated.add(2, Double(r.count))
                let probs = loss.probabilities!
                for i in 0..<indices.count {
                    let row = probs.data + i * classes
                    var best = 0
                    for j in 1..<classes where row[j] > row[best] { best = j }
                    let label = Int(labels[i])
                    let hit = best == label ? 1.0 : 0.0
                    accumulated.add(3 + label, hit)
                    accumulated.add(3 + classes + label, 1)
                    let confidence = Double(row[best])
                    let bin = min(Int(confidence * Double(bins)), bins - 1)
                    accumulated.add(3 + 2 * classes + 3 * bin, 1)
                    accumulated.add(3 + 2 * classes + 3 * bin + 1, confidence)
                    accumulated.add(3 + 2 * classes + 3 * bin + 2, hit)
                }
                start = end
            }
            let sums = try accumulated.global(communicator)
            let n = max(sums[2], 1)
            var ece = 0.0, confidenceSum = 0.0
            for b in 0..<bins {
                let base = 3 + 2 * classes + 3 * b
                let count = sums[base]
                guard count > 0 else { continue }
                ece += abs(sums[base + 1] / count - sums[base + 2] / count) * count / n
                confidenceSum += sums[base + 1]
            }
            return EvaluationResult(
                loss: sums[0] / n, accuracy: sums[1] / n, count: Int(sums[2]),
                perClassCorrect: (0..<classes).map { Int(sums[3 + $0]) },
                perClassCount: (0..<classes).map { Int(sums[3 + classes + $0]) },
                expectedCalibrationError: ece, overconfidence: confidenceSum / n - sums[1] / n)
        }
    }

    /// With local batch norm, each rank's running statistics differ; evaluation uses their
    /// average (or rank 0's) and then restores this rank's own.
    func withEvaluationBuffers<R>(_ body: () throws -> R) throws -> R {
        guard config.bn.mode == .local, worldSize > 1, model.buffers.count > 0 else { return try body() }
        let own = Array(model.buffers.flatValues)
        switch config.bn.localEvalStats {
        case .average:
            try communicator.allReduce(model.buffers.flatValues, op: .sum)
            let scale = 1 / Float(worldSize)
            for i in 0..<model.buffers.count { model.buffers.values[i] *= scale }
        case .rank0:
            try communicator.broadcast(UnsafeMutableRawBufferPointer(model.buffers.flatValues), root: 0)
        }
        defer { _ = own.withUnsafeBufferPointer { model.buffers.flatValues.update(fromContentsOf: $0) } }
        return try body()
    }

    /// Largest difference across ranks of any running mean and any running variance (local BN).
    func localStatisticsSpread() throws -> (mean: Double, variance: Double)? {
        guard config.bn.mode == .local, worldSize > 1 else { return nil }
        var hi = Array(model.buffers.flatValues), lo = hi
        try communicator.allReduce(&hi, op: .max)
        try communicator.allReduce(&lo, op: .min)
        var spreadMean = 0.0, spreadVar = 0.0
        for p in model.buffers.entries {
            for i in p.offset..<(p.offset + p.count) {
                let d = Double(hi[i] - lo[i])
                if p.name.hasSuffix("running_mean") { spreadMean = max(spreadMean, d) } else { spreadVar = max(spreadVar, d) }
            }
        }
        return (spreadMean, spreadVar)
    }

    /// Stops the job when replicas' parameters are no longer bit-identical.
    public func checkReplicas() throws {
        guard worldSize > 1 else { return }
        var fp = Fingerprint()
        fp.add(floats: UnsafeBufferPointer(model.parameters.flatValues))
        do {
            try communicator.checkSame(fp.value, what: "parameters")
        } catch let e as CollectiveError where e.message.hasPrefix("parameters differ") {
            throw CollectiveError(failedRank: rank, message: "replicas diverged at step \(step): parameter checksums differ between ranks")
        }
    }
}

/// Scales gradients so that their global L2 norm is at most `maxNorm` (after the all-reduce,
/// so every rank scales identically).
public func clipGradientNorm(_ arena: Arena, maxNorm: Float) {
    let g = arena.flatGrads
    var sq = 0.0
    for v in g { sq += Double(v) * Double(v) }
    let norm = Float(sq.squareRoot())
    if norm > maxNorm {
        let s = maxNorm / (norm + 1e-6)
        for i in 0..<g.count { g[i] *= s }
    }
}

public struct TrainingDiverged: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
