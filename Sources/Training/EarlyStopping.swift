// Early stopping on the validation split: stop when the chosen metric has not improved by
// `min_delta` for `patience` epochs, and (by default) put back the best epoch's parameters.
import Collectives
import Formats
import Foundation

struct EarlyStopState {
    var best: Double?
    var bestEpoch = 0
    var epochsWithoutImprovement = 0
    /// Parameters and buffers of the best epoch (every rank keeps its copy; they are identical).
    var snapshot: [Float] = []
}

extension Trainer {
    /// Updates the early-stopping state after an epoch; true when training should stop now.
    func shouldStopEarly(_ m: EpochMetrics, _ run: RunDirectory?) throws -> Bool {
        let rule = config.train.earlyStopping
        guard rule.patience > 0, let loss = m.validationLoss, let accuracy = m.validationAccuracy else { return false }
        // Lower is better for the loss; compare negated accuracy the same way.
        let value = rule.metric == .valLoss ? loss : -accuracy
        if earlyStop.best.map({ value < $0 - rule.minDelta }) ?? true {
            earlyStop.best = value
            earlyStop.bestEpoch = m.epoch
            earlyStop.epochsWithoutImprovement = 0
            if rule.restoreBest { earlyStop.snapshot = Array(model.parameters.flatValues) + Array(model.buffers.flatValues) }
            return false
        }
        earlyStop.epochsWithoutImprovement += 1
        guard earlyStop.epochsWithoutImprovement >= rule.patience, step < totalSteps else { return false }
        console.line("lockstep: early stopping after epoch \(m.epoch): \(rule.metric.rawValue) has not improved for \(rule.patience) epoch(s) since epoch \(earlyStop.bestEpoch)" + (rule.restoreBest ? "; restoring epoch \(earlyStop.bestEpoch)'s parameters" : ""))
        if rule.restoreBest && !earlyStop.snapshot.isEmpty {
            let n = model.parameters.count
            earlyStop.snapshot.withUnsafeBufferPointer { s in
                _ = model.parameters.flatValues.update(fromContentsOf: UnsafeBufferPointer(rebasing: s[0..<n]))
                _ = model.buffers.flatValues.update(fromContentsOf: UnsafeBufferPointer(rebasing: s[n...]))
            }
        }
        if let run {
            try writeCheckpoint(run, try epochCheckpoint(sums: [0, 0, 0], metricsJSON: "{\"early_stopped_after_epoch\":\(m.epoch),\"best_epoch\":\(earlyStop.bestEpoch)}"))
        }
        return true
    }
}
