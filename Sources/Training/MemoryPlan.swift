// The memory a run will need, estimated from the config, the model's shapes and the data before
// the parameter arena or any activation is allocated; and the memory this host and process may
// use (the cgroup limit where there is one, else physical memory; RLIMIT_AS per process). The
// trainer refuses to start, with one line, when the estimate exceeds what is available, instead
// of dying in an allocation with a crash trace. `lockstep plan` prints the breakdown.
import Collectives
import Configuration
import Foundation
import Datasets
import NN
import TensorCore

public struct MemoryEstimate: Sendable {
    /// (what, bytes) for one rank, in the order printed.
    public var parts: [(String, Int)] = []
    /// Bytes shared by every rank of one process (the data set, the runtime).
    public var shared = 0
    /// Bytes each rank adds (model, gradients, optimizer state, activations).
    public var perRank = 0

    /// The runtime's own resident memory: Swift, Foundation, OpenBLAS's buffers and OpenMPI,
    /// measured with a tiny model (about 60 MB under mpirun; see docs in the README).
    public static let runtimeBytes = 64 << 20

    public init(config: TrainingConfig, layers: [Layer], data: TrainingData, worldSize: Int) {
        let parameters = layers.reduce(0) { $0 + $1.parameters.reduce(0) { $0 + $1.count } }
        let slotParameters = layers.reduce(0) { $0 + $1.parameters.filter { !$0.sumsOwnChunks }.reduce(0) { $0 + $1.count } }
        let buffers = layers.reduce(0) { $0 + $1.buffers.reduce(0) { $0 + $1.count } }
        let ranks = max(worldSize, 1)
        let sharded = config.optimizer.shard == .on || (config.optimizer.shard == .auto && ranks > 1)
        let owned = sharded ? (parameters + ranks - 1) / ranks : parameters
        let stateTensors: Int
        switch config.optimizer.kind {
        case .sgd: stateTensors = config.optimizer.momentum > 0 ? 1 : 0
        case .adam, .adamw: stateTensors = 2
        case .adagrad: stateTensors = 1
        case .rmsprop: stateTensors = 1 + (config.optimizer.centered ? 1 : 0) + (config.optimizer.momentum > 0 ? 1 : 0)
        }
        // The samples of one micro-batch on one rank; in exact mode whole chunks, one gradient
        // slot each for the parameters that do not sum their own chunks (dense weights do).
        let micro = config.train.globalBatch / max(config.train.accumulateSteps, 1)
        let local = (micro + ranks - 1) / ranks
        var slots = 0, exchangeBytes = 0
        if let chunk = config.train.exactChunk {
            let chunks = (config.train.globalBatch + chunk - 1) / chunk
            slots = (chunks + ranks - 1) / ranks
            // The chunk tree's exchange (ExactGradients.swift): rank 0's blocks, and every
            // block's segment of about 1/ranks; none on one rank or for two ranks of one block.
            let perMicro = (micro + chunk - 1) / chunk
            let blocks = (0..<ranks).map { ChunkTree.blocks(GlobalBatchSampler.shard(total: perMicro, rank: $0, worldSize: ranks), total: perMicro).count }
            if ranks > 1 && !(ranks == 2 && blocks == [1, 1]) {
                exchangeBytes = 4 * parameters * (blocks.max() ?? 0) + 4 * blocks.reduce(0, +) * (parameters / ranks + layers.count + 1)
            }
        }
        fuseBatchNormReLU(layers)   // as Model does (it skips pairs already fused)
        // The first layer computes no input gradient (a flatten has none to skip).
        let firstInput = layers.first.map { $0 is Flatten ? 0 : local * $0.inputShape.reduce(1, *) } ?? 0
        let training = layers.reduce(0) { $0 + $1.activationFloats(batch: local) } - firstInput
        let evaluation = layers.reduce(0) { $0 + $1.evaluationExtraFloats(batch: config.data.evalBatch, trainingBatch: local) }
        parts = [
            ("parameters and gradients (\(parameters) floats)", 8 * parameters + 4 * buffers),
            ("optimizer state", 4 * stateTensors * owned),
            ("exact-mode chunk slots and exchange buffers", config.train.exactChunk != nil ? 4 * slots * slotParameters + exchangeBytes : 0),
            ("activations, training batch of \(local)", 4 * training),
            ("activations, evaluation batch of \(config.data.evalBatch) (beyond training's)", 4 * evaluation),
        ]
        perRank = parts.reduce(0) { $0 + $1.1 }
        shared = data.train.storageBytes + data.test.storageBytes + Self.runtimeBytes
        parts.append(("data set (train \(data.train.count), test \(data.test.count) samples)", data.train.storageBytes + data.test.storageBytes))
        parts.append(("runtime (Swift, OpenBLAS, MPI)", Self.runtimeBytes))
    }

    /// The estimate of a config's model (built without allocating) on `data`.
    public init(config: TrainingConfig, data: TrainingData, worldSize: Int) throws {
        let layers = try ModelBuilder(batchNormMode: config.bn.mode, communicator: SingleProcessCommunicator(),
                                    convAlgorithm: config.conv.algorithm)
            .layers(config.model, inputShape: data.train.sampleShape)
        self.init(config: config, layers: layers, data: data, worldSize: worldSize)
    }

    /// One process holding `ranks` ranks (threads share the data; an MPI process holds one).
    public func bytes(ranksInProcess ranks: Int) -> Int { shared + ranks * perRank }

    /// The breakdown, one line each, and the total for one process with one rank.
    public var table: String {
        (parts + [("total per rank process", bytes(ranksInProcess: 1))]).map { what, bytes in
            "  " + what.padding(toLength: max(what.count, 56), withPad: " ", startingAt: 0) + " " + Self.format(bytes)
        }.joined(separator: "\n")
    }

    public static func format(_ bytes: Int) -> String {
        let b = Double(bytes)
        if b >= 1e12 { return String(format: "%.1f TB", b / 1e12) }
        if b >= 1e9 { return String(format: "%.2f GB", b / 1e9) }
        return String(format: "%.0f MB", b / 1e6)
    }
}

/// What this host and this process may use.
public struct MemoryLimits: Sendable {
    /// The cgroup's memory limit where there is one, else physical memory (bytes).
    public var host: Int
    public var hostSource: String
    /// The address-space limit of this process (RLIMIT_AS), when set.
    public var process: Int?

    public static func current() -> MemoryLimits {
        var limits = MemoryLimits(host: physicalMemory(), hostSource: "physical memory", process: nil)
        for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
               let value = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), value < limits.host {
                limits.host = value
                limits.hostSource = "the cgroup memory limit"
            }
        }
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &rl) == 0 && rl.rlim_cur != rlim_t.max {   // RLIM_INFINITY
            limits.process = Int(clamping: rl.rlim_cur)
        }
        return limits
    }

    static func physicalMemory() -> Int { Int(clamping: ProcessInfo.processInfo.physicalMemory) }
}

extension MemoryEstimate {
    /// Throws one line when this host's ranks would need more than the host has, or one
    /// process more than its address-space limit. `ranksOnHost` counts this host's ranks;
    /// thread ranks share one process.
    public func check(file: String, ranksOnHost: Int, threadsShareProcess: Bool, limits: MemoryLimits = .current()) throws {
        let perProcess = bytes(ranksInProcess: threadsShareProcess ? ranksOnHost : 1)
        let onHost = threadsShareProcess ? perProcess : ranksOnHost * perProcess
        let who = ranksOnHost > 1 ? "\(ranksOnHost) ranks on this host need" : "this run needs"
        if onHost > limits.host {
            throw ConfigError("\(file): \(who) about \(Self.format(onHost)) (\(largest)) but \(limits.hostSource) is \(Self.format(limits.host)); make the model or the batch smaller, or use more hosts")
        }
        if let limit = limits.process, perProcess > limit {
            throw ConfigError("\(file): one process needs about \(Self.format(perProcess)) (\(largest)) but its address-space limit (ulimit -v) is \(Self.format(limit))")
        }
    }

    /// The largest part, for the one-line error.
    var largest: String {
        let top = parts.max { $0.1 < $1.1 }!
        return "\(Self.format(top.1)) of it \(top.0)"
    }
}

extension Trainer {
    /// Refuses, on every rank, a run whose estimate exceeds any of its hosts' memory.
    static func checkMemory(_ config: TrainingConfig, layers: [Layer], data: TrainingData, communicator: Communicator,
                            hosts: [String], console: Console) throws {
        let estimate = MemoryEstimate(config: config, layers: layers, data: data, worldSize: communicator.size)
        let threads = communicator.kind == "threads"
        var ranksHere = communicator.size
        if !threads && hosts.count == communicator.size {
            ranksHere = hosts.filter { $0 == hosts[communicator.rank] }.count
        }
        var problem = ""
        do {
            try estimate.check(file: config.file, ranksOnHost: ranksHere, threadsShareProcess: threads)
        } catch {
            problem = "\(error)"
        }
        // Every rank learns whether any host refused, so that all stop with a message.
        let anyProblem = try communicator.allReduce(problem.isEmpty ? 0 : 1, op: .max)
        if problem.isEmpty && anyProblem == 0 {
            let need = threads ? estimate.bytes(ranksInProcess: ranksHere) : estimate.bytes(ranksInProcess: 1)
            console.line("lockstep: memory estimate \(MemoryEstimate.format(need)) per \(threads ? "process" : "rank process") (--print-config shows the parts)")
        }
        if !problem.isEmpty { throw ConfigError(problem) }
        if anyProblem > 0 { throw CollectiveError(failedRank: communicator.rank, message: "another host has too little memory for this run (see its rank's message)") }
    }
}
