// `lockstep bench`: training throughput after warm-up, and where the time goes.
import Collectives
import Foundation
import NN
import TensorCore

public struct BenchmarkResult {
    public var runs: [Double]            // samples/s of each timed run (global samples)
    public var median: Double { runs.sorted()[runs.count / 2] }
    public var layerNames: [String]
    public var forwardSeconds: [Double]  // per step
    public var backwardSeconds: [Double] // per step
    public var gradientAllReduceSeconds: Double
    /// Exact mode's arithmetic around the gradient all-reduce (maxima, quantising, decoding), per step.
    public var exactSumSeconds: Double
    public var collectiveSeconds: Double // every collective, SyncBN's included, per step
    public var stepSeconds: Double
    public var dataSeconds: Double, lossSeconds: Double, optimizerSeconds: Double   // per step
    /// Median gradient all-reduce in training, and median of a bare all-reduce of the same size
    /// on the underlying communicator (MPI_Allreduce under MPI), both in seconds.
    public var gradientAllReduceMedian: Double
    public var bareAllReduceMedian: Double
    public var gradientBytes: Int
    /// Per step, the wait for the slowest rank before the gradient all-reduce (profiled run).
    public var skewWaitSeconds: Double
}

func median(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.sorted()[v.count / 2] }

extension Trainer {
    /// Runs `warmup` steps, then `runs` timed runs of `steps` steps each, then one profiled run.
    public func benchmark(steps: Int, warmup: Int, runs: Int) throws -> BenchmarkResult {
        let order = sampler.permutation(epoch: 0)
        var cursor = 0
        func oneStep() throws {
            _ = try trainStep(epoch: 0, stepInEpoch: cursor % sampler.stepsPerEpoch, order: order)
            cursor += 1
        }
        for _ in 0..<warmup { try oneStep() }
        var rates = [Double]()
        let samplesPerStep = Double(config.train.globalBatch)
        for _ in 0..<max(runs, 1) {
            try communicator.barrier()
            let t0 = now()
            for _ in 0..<steps { try oneStep() }
            try communicator.barrier()
            rates.append(Double(steps) * samplesPerStep / (now() - t0))
        }
        // A profiled run: per-layer times and communication.
        let timing = LayerTiming(layers: model.layers.count)
        model.timing = timing
        communicator.reset()
        let gradBefore = gradientAllReduceSeconds
        phaseSeconds = (0, 0, 0)
        exactSumSeconds = 0
        let t0 = now()
        for _ in 0..<steps { try oneStep() }
        let elapsed = now() - t0
        model.timing = nil
        let gradientSeconds = gradientAllReduceSeconds - gradBefore
        let collectives = communicator.seconds
        // A last run for the all-reduce comparison (it adds barriers and bare all-reduces).
        recordAllReduceTimes = true
        allReduceTimes = []
        bareAllReduceTimes = []
        skewWaitSeconds = 0
        if worldSize > 1 { for _ in 0..<steps { try oneStep() } }
        recordAllReduceTimes = false
        let per = 1 / Double(max(steps, 1))
        return BenchmarkResult(runs: rates, layerNames: model.layers.map { $0.name },
                               forwardSeconds: timing.forward.map { $0 * per },
                               backwardSeconds: timing.backward.map { $0 * per },
                               gradientAllReduceSeconds: gradientSeconds * per,
                               exactSumSeconds: exactSumSeconds * per,
                               collectiveSeconds: collectives * per,
                               stepSeconds: elapsed * per,
                               dataSeconds: phaseSeconds.data * per, lossSeconds: phaseSeconds.loss * per,
                               optimizerSeconds: phaseSeconds.optimizer * per,
                               gradientAllReduceMedian: median(allReduceTimes), bareAllReduceMedian: median(bareAllReduceTimes),
                               gradientBytes: model.parameters.count * 4, skewWaitSeconds: skewWaitSeconds * per)
    }
}
