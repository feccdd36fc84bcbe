// Exact mode's gradient reduction: each micro-batch's chunk sums are added in the fixed chunk tree
// (TensorCore's ChunkTree), whose shape depends on the micro-batch alone, never on the ranks.
//
// 1. Each rank holds a run of whole chunks and cuts it into the largest tree nodes it covers
//    (its blocks). Dense weights add their chunks in the tree while the values are in registers
//    (CKernels' tree_dense.c, writing each block straight into the exchange buffer); every other
//    parameter's chunk sums land in slots (Arena.useChunkSlots) and are added in the same tree
//    after backward (ChunkTree.sum).
// 2. A reduce-scatter whose reduction is ours: the arena (or a bucket of it) is cut into one
//    segment per rank; every rank sends each rank that segment of its blocks (one
//    MPI_Alltoallw), and each rank adds its segment of every block up the tree (ChunkTree.combine):
//    the additions one process makes over the whole micro-batch, so the same bits on any number
//    of ranks. An all-gather of the segments follows (ZeRO-1 sharding skips it: its segments
//    are the shards). With one block per rank the bytes are a float ring all-reduce's, half of
//    the Int64 sums this replaced. One rank alone writes its root straight into the gradients.
//    Two ranks with one block each need no reduction of ours: the root is b0 + b1, and float
//    addition is commutative, so MPI's own all-reduce (or reduce-scatter) gives exactly the
//    tree's bits, with the float path's traffic. A start-up self-test (`PairSum`) checks that
//    the MPI at hand adds two floats as IEEE does (no flush of subnormals, no other precision,
//    as an in-network reduction might use); if not, the general exchange is used.
// 3. With accumulation, micro-batch m's tree sum T_m is exchanged when its backward ends and the
//    step's gradient is ((T_0 + T_1) + T_2) + ..., in micro-batch order.
// With buckets (train.bucket_mb > 0, the step's last micro-batch) each bucket's exchange starts
// as soon as backward has finished its tensors (the tail of the arena first); its all-gather
// runs after backward. A NaN or infinity in a chunk sum propagates through the same additions on
// every rank. Error bound: ChunkTree.swift.
import Collectives
import Datasets
import NN
import TensorCore

final class ExactGradientReducer {
    let arena: Arena
    /// The blocks the parameters that sum their own chunks write to (shared by all of them).
    let hot = ChunkBlocks()
    private var communicator: Communicator?
    /// This micro-batch: the global chunk count, every rank's blocks, and where rank r's first
    /// block is in the global block order.
    private var total = 0
    private var blocks: [[Range<Int>]] = []
    private var firstBlock: [Int] = []
    private var part: LocalBatch?
    /// One rank: its blocks are the whole tree, and the root is written into the target directly.
    private var direct = false
    /// Two ranks with one block each, summed by MPI's all-reduce (see the top of this file).
    private var pair = false
    /// Whether this MPI adds two floats exactly as IEEE does (PairSum; nil until measured).
    private var pairSumIsExact: Bool?
    /// This rank's block sums, one arena-sized vector each.
    private var local = UnsafeMutableBufferPointer<Float>.allocate(capacity: 0)
    /// Received segments: per exchange, every block's segment in global block order.
    private var received = UnsafeMutableBufferPointer<Float>.allocate(capacity: 0)
    private var scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: 0)
    /// Where micro-batches after the first put their tree sum before it is added to the gradient.
    private var partial = UnsafeMutableBufferPointer<Float>.allocate(capacity: 0)
    private var firstMicroBatch = true
    private var bucketFloats = Int.max
    private var unsentTensor = 0
    private var shards: ShardLayout?

    /// An exchange in flight: an arena range, every rank's segment of it, where this rank's
    /// segments of all blocks arrive.
    private struct Exchange {
        let range: Range<Int>
        let segments: [Range<Int>]
        let received: Int
        let request: PendingCollective
        /// Summed by MPI already (the pair case): nothing to combine or gather.
        var summed = false
    }
    private var exchanges: [Exchange] = []
    private var receivedUsed = 0

    init(arena: Arena) {
        self.arena = arena
        for p in arena.entries where p.sumsOwnChunks { p.hot = hot }
    }
    deinit {
        local.deallocate(); received.deallocate(); scratch.deallocate(); partial.deallocate()
        for p in arena.entries { p.hot = nil }
    }

    /// Before the step's first micro-batch. With `shards` (ZeRO-1) each rank reduces its shard only.
    func beginStep(communicator: Communicator, shards: ShardLayout? = nil) throws {
        self.communicator = communicator
        if pairSumIsExact == nil { pairSumIsExact = communicator.size == 2 ? try PairSum.isExact(communicator) : false }
        self.shards = shards
        firstMicroBatch = true
    }

    /// Before each micro-batch's backward: its tree, this rank's blocks and their targets.
    /// `bucketBytes` 0 reduces everything in `finishMicroBatch`.
    func beginMicroBatch(_ part: LocalBatch, bucketBytes: Int) {
        guard let communicator else { preconditionFailure("ExactGradientReducer.beginMicroBatch before beginStep") }
        let ranks = communicator.size, rank = communicator.rank
        self.part = part
        total = part.globalChunks
        blocks = (0..<ranks).map { ChunkTree.blocks(GlobalBatchSampler.shard(total: total, rank: $0, worldSize: ranks), total: total) }
        firstBlock = blocks.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        let count = firstBlock.last!
        direct = ranks == 1
        pair = pairSumIsExact == true && ranks == 2 && blocks[0].count == 1 && blocks[1].count == 1
        if !direct && !pair {
            grow(&local, blocks[rank].count * arena.count)
            // Segments of all exchanges: at most ⌈range/ranks⌉ per exchange, one exchange per
            // tensor at most; or a shard.
            let segment = max(shards?.counts.max() ?? 0, arena.count / ranks + arena.entries.count + 1)
            grow(&received, count * segment)
            grow(&scratch, ChunkTree.scratchNeeded(blocks.flatMap { $0 }, total: total) * segment)
        }
        if !firstMicroBatch { grow(&partial, arena.count) }
        let mine = blocks[rank]
        hot.first = mine.map { Int32($0.lowerBound - part.chunkRun.lowerBound) }
        hot.count = mine.map { Int32($0.count) }
        hot.bases = mine.indices.map { blockBase($0) }
        bucketFloats = bucketBytes > 0 ? max(bucketBytes / 4, 1) : Int.max
        unsentTensor = arena.entries.count
        exchanges = []
        receivedUsed = 0
    }

    private func grow(_ buffer: inout UnsafeMutableBufferPointer<Float>, _ count: Int) {
        if buffer.count < count { buffer.deallocate(); buffer = .allocate(capacity: count) }
    }

    /// The gradient this micro-batch's tree sum goes to.
    private var target: UnsafeMutablePointer<Float> { firstMicroBatch ? arena.grads!.baseAddress! : partial.baseAddress! }

    /// Where this rank's block k is summed (arena layout).
    private func blockBase(_ k: Int) -> UnsafeMutablePointer<Float> {
        direct || pair ? target : local.baseAddress! + k * arena.count
    }

    /// After a layer's backward (bucketed runs): gradients from arena offset `start` on are final.
    func layerFinished(start: Int) throws {
        let entries = arena.entries
        let first = entries.firstIndex { $0.offset >= start } ?? entries.count
        guard first < unsentTensor else { return }
        if span(first..<unsentTensor).count >= bucketFloats {
            try send(first..<unsentTensor, wait: false)
            unsentTensor = first
        }
        for e in exchanges { _ = try e.request.test() }
    }

    /// Sums the slot tensors of `tensors` into this rank's blocks and starts their exchange.
    private func send(_ tensors: Range<Int>, wait: Bool) throws {
        guard let part, let communicator else { preconditionFailure("send before beginMicroBatch") }
        let floats = span(tensors)
        if floats.isEmpty { return }
        for (k, block) in blocks[communicator.rank].enumerated() {
            let leaves = (block.lowerBound..<block.upperBound).map {
                UnsafePointer(arena.slot(part.chunkOffset + $0 - part.chunkRun.lowerBound).baseAddress!)
            }
            let base = blockBase(k)
            for t in tensors where !arena.entries[t].sumsOwnChunks {
                let p = arena.entries[t]
                ChunkTree.sum(leaves.map { $0 + p.slotOffset }, count: p.count, into: base + p.offset)
            }
        }
        if direct { return }
        if pair {
            let values = UnsafeMutableBufferPointer(start: target + floats.lowerBound, count: floats.count)
            var request: PendingCollective = CompletedCollective()
            if let shards {
                try communicator.reduceScatter(values, counts: shards.ranges.map { $0.clamped(to: floats).count })
            } else if wait {
                try communicator.allReduce(values, op: .sum)
            } else {
                request = try communicator.startAllReduce(values, op: .sum)
            }
            exchanges.append(Exchange(range: floats, segments: [], received: 0, request: request, summed: true))
            return
        }
        let ranks = communicator.size
        let segments = shards.map { s in s.ranges.map { $0.clamped(to: floats) } }
            ?? (0..<ranks).map { q in (floats.lowerBound + floats.count * q / ranks)..<(floats.lowerBound + floats.count * (q + 1) / ranks) }
        let into = receivedUsed
        receivedUsed += firstBlock.last! * segments[communicator.rank].count
        precondition(receivedUsed <= received.count, "chunk-tree exchange: receive buffer too small")
        let pieces = blocks.map(\.count)
        let request: PendingCollective
        if wait {
            try communicator.scatterPieces(local.baseAddress!, pieces: pieces, stride: arena.count, segments: segments, into: received.baseAddress! + into)
            request = CompletedCollective()
        } else {
            request = try communicator.startScatterPieces(local.baseAddress!, pieces: pieces, stride: arena.count, segments: segments, into: received.baseAddress! + into)
        }
        exchanges.append(Exchange(range: floats, segments: segments, received: into, request: request))
    }

    /// After the micro-batch's backward: exchanges what buckets have not, adds every block's
    /// segment up the tree, all-gathers the segments (not when sharded) and adds the result to
    /// the previous micro-batches' sum, in order.
    func finishMicroBatch() throws {
        guard let communicator else { preconditionFailure("finishMicroBatch without beginStep") }
        try send(0..<unsentTensor, wait: true)
        let target = self.target, rank = communicator.rank
        for e in exchanges {
            try e.request.wait()
            if e.summed { continue }
            let mine = e.segments[rank]
            if !mine.isEmpty {
                var list: [(range: Range<Int>, values: UnsafePointer<Float>)] = []
                for (r, rb) in blocks.enumerated() {
                    for (k, b) in rb.enumerated() {
                        list.append((b, UnsafePointer(received.baseAddress! + e.received + (firstBlock[r] + k) * mine.count)))
                    }
                }
                ChunkTree.combine(list, total: total, count: mine.count, into: target + mine.lowerBound, scratch: scratch.baseAddress)
            }
            if shards == nil {
                try communicator.allGather(UnsafeMutableBufferPointer(start: target + e.range.lowerBound, count: e.range.count), counts: e.segments.map(\.count))
            }
        }
        if !firstMicroBatch {
            let mine = shards?.ranges[rank] ?? 0..<arena.count
            let grads = arena.grads!.baseAddress!
            ChunkTree.sum([UnsafePointer(grads + mine.lowerBound), UnsafePointer(target + mine.lowerBound)], count: mine.count, into: grads + mine.lowerBound)
        }
        firstMicroBatch = false
        exchanges = []
    }

    /// The arena offsets that the tensors `tensors` (consecutive, ascending) occupy.
    private func span(_ tensors: Range<Int>) -> Range<Int> {
        guard let first = tensors.first, let last = tensors.last else { return 0..<0 }
        let entries = arena.entries
        return entries[first].offset..<(entries[last].offset + entries[last].count)
    }
}

/// The pair case's start-up self-test: both ranks all-reduce values chosen to expose a sum that
/// is not IEEE's (subnormals and their sums, signed zeros, cancellation, magnitudes far apart,
/// results that round to even), and compare with the sums they compute themselves from both
/// ranks' values. Both ranks agree on the answer (a max all-reduce of the failure flag).
enum PairSum {
    static func values(rank: Int) -> [Float] {
        var v: [Float] = [0, -0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .leastNormalMagnitude, 0x1p-140, 1, -1, 0x1p24, 3, .greatestFiniteMagnitude / 2]
        for i in 0..<53 {   // both signs, exponents from -149 to 100, mantissas with low bits set
            let e = -149 + (i * 47 + rank * 13) % 250
            v.append(Float(sign: (i + rank) % 3 == 0 ? .minus : .plus, exponent: e, significand: 1 + Float(i * 2 + 1 + rank) * 0x1p-23))
        }
        return rank == 0 ? v : v.map { -$0 * 0.75 }.reversed() + []
    }

    static func isExact(_ communicator: Communicator) throws -> Bool {
        var mine = values(rank: communicator.rank)
        let want = zip(values(rank: 0), values(rank: 1)).map { $0 + $1 }
        try mine.withUnsafeMutableBufferPointer { try communicator.allReduce($0, op: .sum) }
        var failed: [Int64] = [mine.map(\.bitPattern) == want.map(\.bitPattern) ? 0 : 1]
        try communicator.allReduce(&failed, op: .max)
        return failed[0] == 0
    }
}
