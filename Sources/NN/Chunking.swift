// Chunking: how a layer splits its local batch so that exact mode is batch-invariant.
//
// In exact mode the global batch is cut into chunks of `size` samples aligned to the sample's
// position in the global batch, and every rank holds whole chunks. Each layer runs its GEMMs
// and reductions per chunk, so a chunk's arithmetic is the same on whichever rank computes it
// and however many chunks share the rank; each chunk's parameter gradients go into a slot of
// their own (Arena.useChunkSlots), to be added in the fixed chunk tree (TensorCore's ChunkTree) rather than in
// float order. In the default fast path (`size == nil`) the whole local batch is one chunk and
// every chunk adds into the one gradient buffer.

public struct Chunking: Sendable, Equatable {
    /// Samples per chunk, or nil for one chunk holding the whole local batch.
    public var size: Int?
    /// The gradient slot of the local batch's first chunk (micro-batches of one step continue
    /// where the previous one ended).
    public var firstSlot: Int

    public init(size: Int?, firstSlot: Int = 0) {
        precondition(size.map { $0 > 0 } ?? true, "chunk size must be positive")
        self.size = size
        self.firstSlot = firstSlot
    }

    /// The whole local batch as one chunk, summing into the gradient buffer: the fast path.
    public static let whole = Chunking(size: nil)

    public var isExact: Bool { size != nil }

    /// Number of chunks in a local batch of n samples.
    public func count(_ n: Int) -> Int {
        guard let size else { return n > 0 ? 1 : 0 }
        return (n + size - 1) / size
    }

    /// The gradient slot of local sample i.
    @inline(__always)
    public func slot(ofSample i: Int) -> Int { firstSlot + (size.map { i / $0 } ?? 0) }

    /// Calls body(samples, slot) for each chunk of a local batch of n samples, in order.
    @inline(__always)
    public func forEach(_ n: Int, _ body: (Range<Int>, Int) throws -> Void) rethrows {
        let step = size ?? max(n, 1)
        var start = 0, slot = firstSlot
        while start < n {
            let end = min(start + step, n)
            try body(start..<end, slot)
            start = end
            slot += 1
        }
    }
}
