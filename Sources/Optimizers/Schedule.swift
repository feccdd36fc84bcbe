// Learning-rate schedules as pure functions of the optimizer step.

public struct LearningRateSchedule: Sendable, Equatable {
    public enum Kind: String, CaseIterable, Sendable {
        case constant, step, cosine
    }
    public var kind: Kind
    public var baseRate: Double
    /// Total optimizer steps of the run (cosine decays to `minRate` over it).
    public var totalSteps: Int
    /// Linear warm-up from ~0 to `baseRate` over this many steps.
    public var warmupSteps: Int
    /// Step schedule: multiply by `gamma` every `stepSize` steps.
    public var stepSize: Int
    public var gamma: Double
    public var minRate: Double

    public init(kind: Kind, baseRate: Double, totalSteps: Int, warmupSteps: Int = 0,
                stepSize: Int = 1, gamma: Double = 0.1, minRate: Double = 0) {
        self.kind = kind
        self.baseRate = baseRate
        self.totalSteps = totalSteps
        self.warmupSteps = warmupSteps
        self.stepSize = max(stepSize, 1)
        self.gamma = gamma
        self.minRate = minRate
    }

    /// The rate for optimizer step `step` (0-based).
    public func rate(at step: Int) -> Double {
        if step < warmupSteps {
            return baseRate * Double(step + 1) / Double(warmupSteps)
        }
        switch kind {
        case .constant:
            return baseRate
        case .step:
            return baseRate * pow(gamma, Double((step - warmupSteps) / stepSize))
        case .cosine:
            let span = max(totalSteps - warmupSteps, 1)
            let t = min(Double(step - warmupSteps) / Double(span), 1)
            return minRate + (baseRate - minRate) * 0.5 * (1 + cos(Double.pi * t))
        }
    }
}

import Foundation
