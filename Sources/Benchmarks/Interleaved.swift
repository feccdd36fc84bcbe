// `lockstep bench --against KEY=VALUE`: two trainers in one process, timed in alternating blocks.
//
// Separate processes on a shared or virtual machine see its speed drift by 15-30% within
// seconds, which swamps a difference of a few percent between two settings. Here both trainers
// live in one process, on the same communicator and the same data, and their timed blocks
// alternate in the order A B B A A B B A ..., so that a drift which is linear over two pairs
// cancels, and each pair's ratio compares blocks seconds apart. Each block is bracketed by
// barriers, so on several ranks it is the job's time; the first steps after a switch find the
// caches holding the other trainer's data, alike for A and B.
import Collectives
import TensorCore
import Training

public struct BenchmarkError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

public struct InterleavedResult {
    /// Samples/s of each pair's A block and B block (global samples).
    public var pairs: [(a: Double, b: Double)]
    public var ratios: [Double] { pairs.map { $0.a / $0.b } }
    public var medianA: Double { median(pairs.map { $0.a }) }
    public var medianB: Double { median(pairs.map { $0.b }) }
    public var medianRatio: Double { median(ratios) }
    /// With `traceSteps`: this rank's timed steps, one row each (see `StepTrace`).
    public var trace: [StepTrace] = []

    public func report(a: String, b: String) -> String {
        var lines = ["pair  \(a.padding(toLength: 24, withPad: " ", startingAt: 0)) \(b.padding(toLength: 24, withPad: " ", startingAt: 0)) A/B"]
        for (i, p) in pairs.enumerated() {
            lines.append(String(format: "%4d  %-24.1f %-24.1f %.3f", i + 1, p.a, p.b, p.a / p.b))
        }
        lines.append(String(format: "samples/s: A median %.1f, B median %.1f; A/B median of the pair ratios %.3f (min %.3f, max %.3f)",
                            medianA, medianB, medianRatio, ratios.min() ?? 0, ratios.max() ?? 0))
        return lines.joined(separator: "\n")
    }
}

/// One timed step on one rank: which trainer ("A"/"B"), the block, the trainer's step count
/// after it, and its seconds of wall time, inside collectives, of this thread's CPU and of the
/// process's CPU (every thread: the checkpoint writer and the prefetcher too), and when it
/// started (CLOCK_MONOTONIC seconds, one clock for every process of the host, so steps can be
/// lined up with what another process did).
public struct StepTrace {
    public var trainer: String, block: Int, step: Int
    public var start: Double, wall: Double, collectives: Double, threadCPU: Double, processCPU: Double
    public static let header = "trainer\tblock\tstep\tstart\twall\tcollectives\tthread_cpu\tprocess_cpu"
    public var line: String { "\(trainer)\t\(block)\t\(step)\t\(start)\t\(wall)\t\(collectives)\t\(threadCPU)\t\(processCPU)" }
}

/// One trainer's steps over epoch 0's order, continuing where its last block stopped, with the
/// periodic checkpoints its config asks for when it has a run directory.
final class StepRunner {
    let trainer: Trainer
    let directory: RunDirectory?
    private let order: [Int]
    init(_ trainer: Trainer, directory: RunDirectory? = nil) {
        self.trainer = trainer
        self.directory = directory
        order = trainer.sampler.permutation(epoch: 0)
    }
    func run(_ steps: Int) throws {
        for _ in 0..<steps { try trainer.stepWithCheckpoints(order: order, run: directory) }
    }
    /// Global samples per second of `steps` steps, barriers on either side; a checkpoint still
    /// being written when the steps end is waited for inside the time.
    /// With `trace` (the trainer's name and the block's number), each step is timed on its own
    /// as well and appended to `rows`.
    func timed(_ steps: Int, trace: (trainer: String, block: Int)? = nil, into rows: inout [StepTrace]) throws -> Double {
        try trainer.communicator.barrier()
        let t0 = monotonicSeconds()
        if let trace {
            let comm = trainer.communicator
            for _ in 0..<steps {
                let (w, c, t, p) = (monotonicSeconds(), comm.seconds, threadCPUSeconds(), processCPUSeconds())
                try trainer.stepWithCheckpoints(order: order, run: directory)
                rows.append(StepTrace(trainer: trace.trainer, block: trace.block, step: trainer.step, start: w, wall: monotonicSeconds() - w,
                                      collectives: comm.seconds - c, threadCPU: threadCPUSeconds() - t, processCPU: processCPUSeconds() - p))
            }
        } else {
            try run(steps)
        }
        try trainer.waitForCheckpoints()
        try trainer.communicator.barrier()
        return Double(steps * trainer.config.train.globalBatch) / (monotonicSeconds() - t0)
    }
}

/// Warms both trainers up, then times `pairs` pairs of `steps`-step blocks in the order
/// A B, B A, A B, ... Both trainers must share the communicator (their collectives never overlap:
/// one block ends with a barrier before the other starts). A trainer given a run directory
/// writes the periodic checkpoints its config asks for into it (checkpoint.every_steps).
/// `traceSteps` times every step of the blocks on its own as well (StepTrace).
public func interleavedBenchmark(_ a: Trainer, _ b: Trainer, steps: Int, warmup: Int, pairs: Int,
                                 directories: (a: RunDirectory?, b: RunDirectory?) = (nil, nil),
                                 traceSteps: Bool = false) throws -> InterleavedResult {
    let ra = StepRunner(a, directory: directories.a), rb = StepRunner(b, directory: directories.b)
    for (t, d) in [(a, directories.a), (b, directories.b)] where d != nil && t.step + warmup + max(pairs, 1) * steps >= t.totalSteps {
        // Past the run's last step the epoch loop takes no periodic checkpoints: the comparison would be void.
        throw BenchmarkError("bench --against: \(warmup) + \(max(pairs, 1)) × \(steps) steps reach the run's last step (\(t.totalSteps)), after which no periodic checkpoints are taken; lower --steps or --pairs, or raise train.epochs")
    }
    try ra.run(warmup)
    try rb.run(warmup)
    var result = InterleavedResult(pairs: [])
    var block = 0
    func timed(_ runner: StepRunner, _ name: String) throws -> Double {
        block += 1
        return try runner.timed(steps, trace: traceSteps ? (name, block) : nil, into: &result.trace)
    }
    for i in 0..<max(pairs, 1) {
        if i % 2 == 0 {
            let x = try timed(ra, "A"), y = try timed(rb, "B")
            result.pairs.append((x, y))
        } else {
            let y = try timed(rb, "B"), x = try timed(ra, "A")
            result.pairs.append((x, y))
        }
    }
    return result
}
