// `lockstep bench`: training throughput after warm-up, and where the time goes.
import Collectives
import Foundation
import Training
import NN
import TensorCore

public struct BenchmarkResult {
    public var runs: [Double]            // samples/s of each timed run (global samples)
    public var median: Double { TensorCore.median(runs) }
    public var layerNames: [String]
    public var forwardSeconds: [Double]  // per step
    public var backwardSeconds: [Double] // per step
    public var gradientAllReduceSeconds: Double
    /// Exact mode's arithmetic around the gradient all-reduce (maxima, quantising, decoding), per step.
    public var exactSumSeconds: Double
    public var collectiveSeconds: Double // every collective, SyncBN's included, per step
    public var stepSeconds: Double
    public var dataSeconds: Double, lossSeconds: Double, optimizerSeconds: Double   // per step
    /// Clearing the gradients (and exact mode's chunk slots) before a step, per step.
    public var zeroingSeconds = 0.0
    /// Median gradient all-reduce in training, and median of a bare all-reduce of the same size
    /// on the underlying communicator (MPI_Allreduce under MPI), both in seconds.
    public var gradientAllReduceMedian: Double
    public var bareAllReduceMedian: Double
    public var gradientBytes: Int
    /// Per step, the wait for the slowest rank before the gradient all-reduce (profiled run).
    public var skewWaitSeconds: Double
    /// All-reduces per step and their payload in bytes per step (profiled run; SyncBN's included).
    public var allReducesPerStep = 0.0
    public var allReduceBytesPerStep = 0.0
    /// How the gradients were summed over the ranks (Trainer.gradientReduction).
    public var gradientReduction = ""
    /// The roofline lines (this machine's sgemm peak and bandwidth, each layer against them).
    public var roofline: [String] = []
}

extension Trainer {
    /// Runs `warmup` steps, then `runs` timed runs of `steps` steps each, then one profiled run.
    public func benchmark(steps: Int, warmup: Int, runs: Int) throws -> BenchmarkResult {
        let runner = StepRunner(self)
        func oneStep() throws { try runner.run(1) }
        for _ in 0..<warmup { try oneStep() }
        var rates = [Double]()
        let samplesPerStep = Double(config.train.globalBatch)
        for _ in 0..<max(runs, 1) {
            try communicator.barrier()
            let t0 = monotonicSeconds()
            for _ in 0..<steps { try oneStep() }
            try communicator.barrier()
            rates.append(Double(steps) * samplesPerStep / (monotonicSeconds() - t0))
        }
        // A profiled run: per-layer times, phases and communication.
        let timing = LayerTiming(layers: model.layers.count)
        let probe = StepProbe()
        model.timing = timing
        self.probe = probe
        communicator.reset()
        let gradBefore = gradientAllReduceSeconds
        let t0 = monotonicSeconds()
        for _ in 0..<steps { try oneStep() }
        let elapsed = monotonicSeconds() - t0
        model.timing = nil
        let gradientSeconds = gradientAllReduceSeconds - gradBefore
        let collectives = communicator.seconds
        let (allReduces, allReduceBytes) = (communicator.allReduces, communicator.allReduceBytes)
        let per = 1 / Double(max(steps, 1))
        var result = BenchmarkResult(runs: rates, layerNames: model.layers.map { $0.name },
                                     forwardSeconds: timing.forward.map { $0 * per },
                                     backwardSeconds: timing.backward.map { $0 * per },
                                     gradientAllReduceSeconds: gradientSeconds * per,
                                     exactSumSeconds: probe.exactSumSeconds * per,
                                     collectiveSeconds: collectives * per,
                                     stepSeconds: elapsed * per,
                                     dataSeconds: probe.dataSeconds * per, lossSeconds: probe.lossSeconds * per,
                                     optimizerSeconds: probe.optimizerSeconds * per,
                                     gradientAllReduceMedian: 0, bareAllReduceMedian: 0,
                                     gradientBytes: model.parameters.count * 4, skewWaitSeconds: 0)
        result.zeroingSeconds = probe.zeroingSeconds * per
        result.allReducesPerStep = Double(allReduces) * per
        result.allReduceBytesPerStep = Double(allReduceBytes) * per
        result.gradientReduction = gradientReduction
        // A last run for the all-reduce comparison (it adds barriers and bare all-reduces).
        probe.reset()
        probe.comparesAllReduce = true
        if worldSize > 1 { for _ in 0..<steps { try oneStep() } }
        self.probe = nil
        result.gradientAllReduceMedian = median(probe.allReduceTimes)
        result.bareAllReduceMedian = median(probe.bareAllReduceTimes)
        result.skewWaitSeconds = probe.skewWaitSeconds * per
        result.roofline = Roofline.measure().table(layers: model.layers, forward: result.forwardSeconds, backward: result.backwardSeconds,
                                                   samplesPerStep: Double(config.train.globalBatch) / Double(worldSize),
                                                   stepSeconds: result.stepSeconds, passes: memoryPasses(result))
        return result
    }

    /// The memory-bound passes outside the layers, with the bytes each moves per step: zeroing
    /// (4 bytes per gradient float, per chunk slot in exact mode) and the optimizer step (reads
    /// of weights, gradients and state, writes of weights and state over this rank's elements).
    func memoryPasses(_ r: BenchmarkResult) -> [(name: String, seconds: Double, bytes: Double)] {
        let n = Double(model.parameters.count)
        let slots = config.train.exactChunk != nil ? Double(max(model.parameters.slotCount, 1)) : 1
        let states = Double(optimizer.state.count)
        return [("zeroing gradients", r.zeroingSeconds, 4 * n * slots),
                ("optimizer step", r.optimizerSeconds, 4 * (3 + 2 * states) * Double(optimizer.owned.count))]
    }
}

extension BenchmarkResult {
    /// The report `lockstep bench` prints: throughput, communication, and a table of where a
    /// step's time goes.
    public func report(header: String) -> String {
        var lines = [header]
        lines.append(String(format: "samples/s: median %.1f  (runs: %@)", median, runs.map { String(format: "%.1f", $0) }.joined(separator: ", ")))
        lines.append(String(format: "per step (profiled run): %.2f ms; gradient all-reduce %.3f ms; all collectives %.3f ms (SyncBN and others %.3f ms)",
                            1000 * stepSeconds, 1000 * gradientAllReduceSeconds, 1000 * collectiveSeconds,
                            1000 * (collectiveSeconds - gradientAllReduceSeconds)))
        lines.append(String(format: "all-reduces per step: %.1f, %.3f MB in all", allReducesPerStep, allReduceBytesPerStep / 1e6))
        lines.append("gradients summed by: \(gradientReduction)")
        if bareAllReduceMedian > 0 {
            lines.append(String(format: "gradient all-reduce of %.2f MB: median %.3f ms in training, bare all-reduce of the same size %.3f ms (ratio %.2f); waiting for the slowest rank before it %.3f ms/step",
                                Double(gradientBytes) / 1e6, 1000 * gradientAllReduceMedian, 1000 * bareAllReduceMedian,
                                gradientAllReduceMedian / max(bareAllReduceMedian, 1e-12), 1000 * skewWaitSeconds))
        }
        lines.append("layer                 forward ms  backward ms   share")
        let layerTotal = forwardSeconds.reduce(0, +) + backwardSeconds.reduce(0, +)
        for i in 0..<layerNames.count {
            let share = (forwardSeconds[i] + backwardSeconds[i]) / stepSeconds
            let name = layerNames[i].padding(toLength: 20, withPad: " ", startingAt: 0)
            lines.append(name + String(format: " %11.3f %12.3f %6.1f%%", 1000 * forwardSeconds[i], 1000 * backwardSeconds[i], 100 * share))
        }
        let other = stepSeconds - layerTotal - dataSeconds - lossSeconds - zeroingSeconds - optimizerSeconds - gradientAllReduceSeconds - exactSumSeconds
        for (name, t) in [("data (batch + augmentation)", dataSeconds), ("loss", lossSeconds), ("zeroing gradients", zeroingSeconds),
                          ("optimizer step", optimizerSeconds), ("gradient all-reduce", gradientAllReduceSeconds),
                          ("exact sums (chunk tree, words)", exactSumSeconds), ("other", other)] {
            lines.append(name.padding(toLength: 33, withPad: " ", startingAt: 0) + String(format: " %11.3f ms      %6.1f%%", 1000 * t, 100 * t / stepSeconds))
        }
        return (lines + roofline).joined(separator: "\n")
    }
}
