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
// 4. Ranks that all share one host (train.shared_memory, the default) send nothing: each rank
//    writes its blocks into a region they share (an MPI-3 shared window; Collectives'
//    SharedMemory.swift), and after a fence adds its segment of every rank's blocks up the tree
//    straight from where they lie, into one shared sum; after a second fence every rank's update
//    reads the whole sum there (Arena.summedGradientBase). The same additions, so the same bits,
//    with no copy through MPI and no all-gather.
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
    /// Whether ranks that share a host may reduce through shared memory (train.shared_memory).
    let sharedMemory: Bool
    /// The one-host region: per rank, the sum's room (only rank 0's is used) then its blocks.
    private var region: SharedRegion?
    /// False once the communicator said its ranks share no memory.
    private var regionAvailable = true
    /// This micro-batch reduces through `region`.
    private var shared = false

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

    init(arena: Arena, sharedMemory: Bool = true) {
        self.arena = arena
        self.sharedMemory = sharedMemory
        for p in arena.entries where p.sumsOwnChunks { p.hot = hot }
    }
    deinit {
        local.deallocate(); received.deallocate(); scratch.deallocate(); partial.deallocate()
        for p in arena.entries { p.hot = nil }
    }

    /// How the last micro-batch's chunk sums were added over the ranks, for reports.
    var reduction: String {
        guard communicator != nil else { return "none yet (no step taken)" }
        if direct { return "one rank: the chunk tree in this process" }
        if shared { return "the chunk tree in shared memory (every rank on one host; no messages)" }
        if pair { return "the chunk tree, its two blocks summed by MPI's all-reduce" }
        return "the chunk tree over MPI messages (all-to-all of block segments, then all-gather)"
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
    func beginMicroBatch(_ part: LocalBatch, bucketBytes: Int) throws {
        guard let communicator else { preconditionFailure("ExactGradientReducer.beginMicroBatch before beginStep") }
        let ranks = communicator.size, rank = communicator.rank
        self.part = part
        total = part.globalChunks
        blocks = (0..<ranks).map { ChunkTree.blocks(GlobalBatchSampler.shard(total: total, rank: $0, worldSize: ranks), total: total) }
        firstBlock = blocks.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        let count = firstBlock.last!
        direct = ranks == 1
        shared = !direct && sharedMemory && regionAvailable
        if shared {
            // Every rank knows every rank's blocks, so all agree on whether to (re)allocate.
            let floats = (1 + blocks.map(\.count).max()!) * arena.count
            if (region?.floats ?? 0) < floats {
                let old = region
                region = try communicator.sharedRegion(floats: floats)
                regionAvailable = region != nil
                shared = regionAvailable
                if let old, !firstMicroBatch {   // carry the sum so far across
                    if let region {   // this rank's segment
                        let mine = segment(communicator)
                        (region.base(0) + mine.lowerBound).update(from: old.base(0) + mine.lowerBound, count: mine.count)
                    } else {          // no room: messages from here on, the whole sum into the gradients
                        arena.grads!.baseAddress!.update(from: old.base(0), count: arena.count)
                    }
                }
            }
        }
        pair = !shared && pairSumIsExact == true && ranks == 2 && blocks[0].count == 1 && blocks[1].count == 1
        if shared {
            let segment = max(shards?.counts.max() ?? 0, arena.count / ranks + 1)
            grow(&scratch, ChunkTree.scratchNeeded(blocks.flatMap { $0 }, total: total) * segment)
        } else if !direct && !pair {
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
        if shared, let region, let communicator { return blockBase(k, of: communicator.rank, region) }
        return direct || pair ? target : local.baseAddress! + k * arena.count
    }

    /// Rank r's block k in the shared region (after the sum's room).
    private func blockBase(_ k: Int, of r: Int, _ region: SharedRegion) -> UnsafeMutablePointer<Float> {
        region.base(r) + (1 + k) * arena.count
    }

    /// After a layer's backward (bucketed runs): gradients from arena offset `start` on are final.
    func layerFinished(start: Int) throws {
        if shared { return }   // nothing to send: the whole reduction runs after backward
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
        if direct || shared { return }
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
        if shared { return try reduceShared(communicator) }
        arena.summedGradientBase = nil
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

    /// The one-host reduction: after the first fence every rank's blocks are complete; this rank
    /// adds its segment of all of them up the tree (into the shared sum, or for micro-batches
    /// after the first into `partial`, then onto the sum in order); after the second every
    /// segment of the sum is, and no rank reads blocks any more (the next backward may write them).
    private func reduceShared(_ communicator: Communicator) throws {
        guard let region else { preconditionFailure("one-host reduction without a region") }
        let mine = segment(communicator)
        let sum = region.base(0)
        try region.fence()
        if !mine.isEmpty {
            var list: [(range: Range<Int>, values: UnsafePointer<Float>)] = []
            for (r, rb) in blocks.enumerated() {
                for (k, b) in rb.enumerated() { list.append((b, UnsafePointer(blockBase(k, of: r, region) + mine.lowerBound))) }
            }
            let out = (firstMicroBatch ? sum : partial.baseAddress!) + mine.lowerBound
            ChunkTree.combine(list, total: total, count: mine.count, into: out, scratch: scratch.baseAddress)
            if !firstMicroBatch {
                ChunkTree.sum([UnsafePointer(sum + mine.lowerBound), UnsafePointer(out)], count: mine.count, into: sum + mine.lowerBound)
            }
        }
        try region.fence()
        arena.summedGradientBase = sum
        firstMicroBatch = false
    }

    /// The part of the sum this rank adds up in the one-host reduction: its shard, or 1/p.
    private func segment(_ communicator: Communicator) -> Range<Int> {
        let rank = communicator.rank, ranks = communicator.size
        return shards?.ranges[rank] ?? (arena.count * rank / ranks)..<(arena.count * (rank + 1) / ranks)
    }

    /// The arena offsets that the tensors `tensors` (consecutive, ascending) occupy.
    private func span(_ tensors: Range<Int>) -> Range<Int> {
        guard let first = tensors.first, let last = tensors.last else { return 0..<0 }
        let entries = arena.entries
        return entries[first].offset..<(entries[last].offset + entries[last].count)
    }
}
