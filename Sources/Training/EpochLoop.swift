// The epoch loop: steps until the epoch (or the run) ends, with the per-step callbacks, progress
// lines, replica checks, checkpoints and the stop request; then the epoch's end: global train
// sums, the replica check, evaluation and the metrics record.
import Collectives
import Formats
import Foundation
import TensorCore

extension Trainer {
    /// Trains to the end (epochs or max_steps), evaluating after every epoch; checkpoints and
    /// logs into `run` (rank 0). After `restore`, continues the restored epoch's train sums.
    @discardableResult
    public func run(directory run: RunDirectory? = nil) throws -> [EpochMetrics] {
        let steps = sampler.stepsPerEpoch
        console.line("lockstep: \(config.name) on \(worldSize) rank(s) [\(communicator.kind)], bn \(config.bn.mode.rawValue), global batch \(config.train.globalBatch), \(steps) steps/epoch, \(totalSteps) steps, \(model.parameterCount) parameters" + (sync.chunk != nil ? ", exact mode" : ", float sums (train.exact: false)") + (shards != nil ? ", optimizer sharded over \(worldSize) ranks" : "") + (step > 0 ? ", resuming at step \(step)" : ""))
        // Restored sums are global: rank 0 carries them so that summing over ranks is exact.
        // A failure elsewhere still lets a write in flight finish (its file is whole or absent).
        defer { try? checkpointWriter.wait() }
        var pendingSums = resumedSums.map { rank == 0 ? $0 : [0, 0, 0] }
        resumedSums = nil
        while step < totalSteps {
            let epoch = step / steps
            let epochStart = monotonicSeconds()
            communicator.reset()
            gradientAllReduceSeconds = 0
            var sums = pendingSums ?? [0, 0, 0]   // loss sum, correct, samples (this rank's share)
            pendingSums = nil
            let order = sampler.permutation(epoch: epoch)
            var stepsThisEpoch = 0
            var logSums = [0.0, 0.0, 0.0]
            while step < totalSteps && step / steps == epoch {
                let t0 = monotonicSeconds(), c0 = communicator.seconds
                try prepareCheckpointImage(run)
                let r = try trainStep(epoch: epoch, stepInEpoch: step % steps, order: order)
                epochComputeSeconds += monotonicSeconds() - t0 - (communicator.seconds - c0)
                guard r.lossSum.isFinite else {
                    throw TrainingDiverged(message: "training diverged: the loss is \(r.lossSum) at step \(step) (epoch \(epoch + 1)); lower optimizer.lr, add schedule.warmup_epochs or set optimizer.clip_norm")
                }
                for (i, v) in [r.lossSum, Double(r.correct), Double(r.count)].enumerated() { sums[i] += v; logSums[i] += v }
                step += 1
                stepsThisEpoch += 1
                onStep?(StepEnd(step: step, epoch: epoch + 1, learningRate: schedule.rate(at: step - 1), lossSum: r.lossSum, correct: r.correct, samples: r.count))
                if config.check.replicasEvery > 0 && step % config.check.replicasEvery == 0 { try checkReplicas() }
                if config.train.logEvery > 0 && step % config.train.logEvery == 0 {
                    try logProgress(&logSums, run)
                }
                console.progress(step % steps == 0 ? steps : step % steps, of: steps,
                                 String(format: "epoch %d  loss %.4f", epoch + 1, sums[0] / max(sums[2], 1)))
                let stopping = stopAgreed
                try checkpointAfterStep(run, sums: sums, stopping: stopping)
                if stopping {
                    try checkpointWriter.wait()   // the stop's checkpoint is on disk before the exit
                    console.line("lockstep: stopping at step \(step) on a signal; resume with --resume auto")
                    throw Preempted(step: step)
                }
            }
            let trainSeconds = monotonicSeconds() - epochStart
            let m = try finishEpoch(epoch, sums: sums, steps: stepsThisEpoch, trainSeconds: trainSeconds)
            history.append(m)
            onEpoch?(m)
            console.line(m.consoleLine(epochs: (totalSteps + steps - 1) / steps) + stragglerNote(m))
            run?.log(m, kind: "epoch", step: step)
            try checkpointAfterEpoch(run, metrics: m)
            if try shouldStopEarly(m, run) { break }
        }
        try checkpointWriter.wait()
        return history
    }

    /// Every `train.log_every` steps: the loss and accuracy since the last line, over all ranks.
    func logProgress(_ logSums: inout [Double], _ run: RunDirectory?) throws {
        try communicator.allReduce(&logSums)
        let p = TrainProgress(step: step, epoch: Double(step) / Double(sampler.stepsPerEpoch), learningRate: schedule.rate(at: step - 1),
                              trainLoss: logSums[0] / max(logSums[2], 1), trainAccuracy: logSums[1] / max(logSums[2], 1))
        if !console.isTerminal {
            console.line(String(format: "  step %d/%d  loss %.4f  acc %.2f%%  lr %.5f", step, totalSteps, p.trainLoss, 100 * p.trainAccuracy, p.learningRate))
        }
        run?.log(p, kind: "train", step: step)
        logSums = [0, 0, 0]
    }

    /// The ranks whose compute time exceeds the median's by more than `threshold` (a fraction).
    static func stragglers(_ compute: [Double], threshold: Double) -> [Int] {
        guard threshold > 0, compute.count > 1 else { return [] }
        let median = median(compute)
        return compute.indices.filter { compute[$0] > median * (1 + threshold) }
    }

    /// The end of an epoch: global train sums, the replica check, evaluation, the metrics record.
    func finishEpoch(_ epoch: Int, sums: [Double], steps: Int, trainSeconds: Double) throws -> EpochMetrics {
        let commSeconds = communicator.seconds, gradientSeconds = gradientAllReduceSeconds
        enter("evaluation after step \(step)")
        // Each rank's compute seconds ride in the same sum (its own slot, zeros elsewhere: exact).
        var global = sums + [Double](repeating: 0, count: worldSize)
        global[3 + rank] = epochComputeSeconds
        epochComputeSeconds = 0
        try communicator.allReduce(&global)
        let compute = global[3...].map { $0 / Double(max(steps, 1)) }
        try checkReplicas()
        let spread = try localStatisticsSpread()
        let validation = try evaluateValidation()
        let eval = try evaluate()
        let perStep = 1 / Double(max(steps, 1))
        return EpochMetrics(
            epoch: epoch + 1, step: step, learningRate: schedule.rate(at: step - 1),
            trainLoss: global[0] / max(global[2], 1), trainAccuracy: global[1] / max(global[2], 1),
            validationLoss: validation?.loss, validationAccuracy: validation?.accuracy,
            testLoss: eval.loss, testAccuracy: eval.accuracy, testSamples: eval.count,
            expectedCalibrationError: eval.expectedCalibrationError, overconfidence: eval.overconfidence,
            samplesPerSecond: global[2] / trainSeconds, secondsPerStep: trainSeconds * perStep,
            communicationSecondsPerStep: commSeconds * perStep, gradientAllReduceSecondsPerStep: gradientSeconds * perStep,
            elapsedSeconds: monotonicSeconds() - startTime, worldSize: worldSize, bnMode: config.bn.mode.rawValue,
            runningMeanSpread: spread?.mean, runningVarSpread: spread?.variance,
            rankComputeSecondsPerStep: worldSize > 1 ? compute : nil,
            stragglers: worldSize > 1 ? Self.stragglers(compute, threshold: config.check.stragglerThreshold) : nil)
    }

    /// "  straggler: rank 1 on node1 (1.9× the median compute per step)", or "".
    func stragglerNote(_ m: EpochMetrics) -> String {
        guard let slow = m.stragglers, !slow.isEmpty, let compute = m.rankComputeSecondsPerStep else { return "" }
        let median = median(compute)
        return slow.map { r in
            String(format: "  straggler: rank %d on %@ (%.1f× the median compute per step)", r, hosts[r] as NSString, compute[r] / max(median, 1e-12))
        }.joined()
    }
}
