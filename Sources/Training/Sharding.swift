// The sharded optimizer step (ZeRO stage 1, optimizer.shard): which share of the parameter arena
// each rank updates, and gathering the optimizer state for a checkpoint. The reduce-scatter and
// the all-gather of the updated blocks are in GradientSync.swift and ExactGradients.swift.
//
// A step: gradients are reduce-scattered (each rank receives the sum of its block only: half
// the bytes of an all-reduce), each rank clips (with the global norm) and updates its block with
// its block of the optimizer state (the only state it holds: 1/p of it), and the blocks of
// parameters are all-gathered. Every element's update depends only on its own gradient and
// state, and the global norm is summed in tiles that shards never cut (Optimizers/Clipping.swift),
// so in exact mode the parameters have the bits of the unsharded step on any number of ranks.
// Checkpoints all-gather the state into whole-arena buffers for the file, and a restore keeps
// each rank's block, so files do not depend on the number of ranks.
import Collectives
import Configuration
import NN
import Optimizers
import TensorCore

/// Consecutive blocks of whole norm tiles, one per rank, as equal as whole tiles allow.
public struct ShardLayout: Sendable, Equatable {
    public let ranges: [Range<Int>]

    public init(count: Int, ranks: Int) {
        let tiles = (count + normTile - 1) / normTile
        ranges = (0..<ranks).map { r in
            min(tiles * r / ranks * normTile, count)..<min(tiles * (r + 1) / ranks * normTile, count)
        }
    }

    public var counts: [Int] { ranges.map(\.count) }
}

extension Trainer {
    /// optimizer.shard: true, false, or auto (on several hosts, and never with overlap buckets).
    /// Every rank decides alike from `hosts`, every rank's hostname (Trainer.init gathers them
    /// once, whatever the setting, so that every rank runs the same collectives).
    static func shouldShard(_ config: TrainingConfig, _ communicator: Communicator, hosts: [String]) -> Bool {
        guard communicator.size > 1 else { return false }
        switch config.optimizer.shard {
        case .on: return true
        case .off: return false
        case .auto: return config.train.bucketMB == 0 && Set(hosts).count > 1
        }
    }

    /// The optimizer state over the whole arena, for a checkpoint (every rank calls it: when
    /// sharded, each rank's block is all-gathered into temporary whole-arena buffers).
    public func withFullOptimizerState<R>(_ body: ([(name: String, values: UnsafeMutableBufferPointer<Float>)]) throws -> R) throws -> R {
        guard let shards else { return try body(optimizer.state) }
        let n = model.parameters.count, mine = optimizer.owned
        var full: [(name: String, values: UnsafeMutableBufferPointer<Float>)] = []
        defer { for f in full { f.values.deallocate() } }
        for (name, block) in optimizer.state {
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
            buffer.initialize(repeating: 0)
            full.append((name, buffer))
            _ = UnsafeMutableBufferPointer(rebasing: buffer[mine]).update(fromContentsOf: block)
            try communicator.allGather(buffer, counts: shards.counts)
        }
        return try body(full)
    }
}
