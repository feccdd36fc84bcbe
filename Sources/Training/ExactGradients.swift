// Exact mode's gradient reduction: per-chunk gradient slots summed in integers, optionally in
// buckets that overlap backward.
//
// After backward, slot j of the arena holds chunk j's float gradient (Arena.useChunkSlots).
// 1. Each rank takes, per parameter tensor, the largest |value| over its slots; a float
//    all-reduce (max) agrees on it, and carries the stop flag and a non-finite flag (max = or).
// 2. Every rank derives the same scale 2^s per tensor from that maximum and the number of chunks
//    in the global batch (FixedPoint.scaleExponent), rounds each slot value to an Int64 and adds
//    them: integer sums are exact, so the order of chunks and ranks no longer matters.
// 3. An Int64 all-reduce (sum) adds the ranks' sums, with the step's metric words riding along;
//    each rank decodes the same integers into the same float gradients.
// With buckets (train.bucket_mb > 0), steps 1-3 run per bucket of whole tensors as soon as
// backward has finished them (the tail of the arena first): the bucket's max all-reduce starts
// at once, and its Int64 sum just before the next bucket's max (or at the end), so every rank
// starts the same collectives in the same order. Scales and sums are per tensor either way, so
// the bits are those of the one-shot reduction. The last bucket carries the flags and metric words.
// Error bound: see FixedPoint (TensorCore/ExactSum.swift).
import Collectives
import NN
import TensorCore

final class ExactGradientReducer {
    let arena: Arena
    /// Elements per tile of the slot sum: 32 KiB of Int64, within L1/L2.
    static let tile = 4096
    /// Metric words first, then the gradients' integer sums (so the last bucket, from tensor 0,
    /// is contiguous with the words). Stable storage: buckets in flight point into it.
    private var sums = UnsafeMutableBufferPointer<Int64>.allocate(capacity: 0)
    private var words = 0
    private var slotCount = 0, totalChunks = 0
    private var exponents: [Int]
    private var nonFinite = false
    private var bucketFloats = Int.max
    private var unsentTensor = 0
    private var communicator: Communicator?

    private final class Bucket {
        let tensors: Range<Int>
        /// Per tensor, then the poison flag; stable storage for the all-reduce in flight.
        let maxima: UnsafeMutableBufferPointer<Float>
        var maxRequest: PendingCollective?
        var sumRequest: PendingCollective?
        init(tensors: Range<Int>) {
            self.tensors = tensors
            maxima = .allocate(capacity: tensors.count + 1)
            maxima.initialize(repeating: 0)
        }
        deinit { maxima.deallocate() }
    }
    private var buckets: [Bucket] = []

    init(arena: Arena) {
        self.arena = arena
        exponents = [Int](repeating: 0, count: arena.entries.count)
    }
    deinit { sums.deallocate() }

    struct Outcome {
        /// Some rank asked to stop after this step.
        var stop: Bool
        /// Some rank's gradient held an infinity or NaN (the gradients are then NaN).
        var nonFinite: Bool
    }

    /// Before the last micro-batch's backward: `bucketBytes` 0 reduces everything in `finish`.
    func begin(slotCount: Int, totalChunks: Int, words: Int, bucketBytes: Int, communicator: Communicator) {
        (self.slotCount, self.totalChunks, self.words, self.communicator) = (slotCount, totalChunks, words, communicator)
        if sums.count != arena.count + words {
            sums.deallocate()
            sums = .allocate(capacity: arena.count + words)
        }
        bucketFloats = bucketBytes > 0 ? max(bucketBytes / 8, 1) : Int.max   // Int64 words on the wire
        unsentTensor = arena.entries.count
        nonFinite = false
        buckets = []
    }

    /// After a layer's backward (bucketed runs): gradients from arena offset `start` on are final.
    func layerFinished(start: Int) throws {
        let entries = arena.entries
        let first = entries.firstIndex { $0.offset >= start } ?? entries.count
        guard first < unsentTensor, let communicator else { return }
        if span(first..<unsentTensor).count >= bucketFloats {
            try startSum(ofLastBucket: communicator)
            let bucket = Bucket(tensors: first..<unsentTensor)
            bucket.maxima[bucket.tensors.count] = localMaxima(bucket.tensors, into: bucket.maxima) ? 1 : 0
            bucket.maxRequest = try communicator.startAllReduce(bucket.maxima, op: .max)
            buckets.append(bucket)
            unsentTensor = first
        }
        for b in buckets { _ = try b.maxRequest?.test(); _ = try b.sumRequest?.test() }
    }

    /// After backward: reduces the tensors not yet sent (with the flags and `extras`, Int64 words
    /// summed over ranks), waits for every bucket and decodes all gradients. With `shards` (no
    /// buckets) the sums are reduce-scattered instead: each rank decodes its block only, and the
    /// words reach rank 0 alone (zeros elsewhere).
    func finish(stop: Bool, extras: inout [Int64], shards: ShardLayout? = nil) throws -> Outcome {
        guard let communicator else { preconditionFailure("ExactGradientReducer.finish without begin") }
        precondition(extras.count == words)
        try startSum(ofLastBucket: communicator)
        let rest = 0..<unsentTensor
        var maxima = [Float](repeating: 0, count: rest.count + 2)
        // A non-finite loss (its words' overflow counter) poisons the step like a gradient does,
        // so every rank learns of it even when only rank 0 receives the summed words.
        let lossNonFinite = words >= ExactSum.width && extras[ExactSum.limbs] != 0
        maxima[rest.count] = maxima.withUnsafeMutableBufferPointer { localMaxima(rest, into: $0) } || lossNonFinite ? 1 : 0
        maxima[rest.count + 1] = stop ? 1 : 0
        try communicator.allReduce(&maxima, op: .max)
        let outcome = Outcome(stop: maxima[rest.count + 1] > 0, nonFinite: nonFinite || maxima[rest.count] > 0)
        for b in buckets { try b.sumRequest?.wait() }
        if outcome.nonFinite {   // every rank knows it, and skips the integer sum alike
            arena.flatGrads.update(repeating: .nan)
            return outcome
        }
        for (i, e) in extras.enumerated() { sums[i] = e }
        maxima.withUnsafeBufferPointer { quantize(rest, maxima: $0) }
        let mine: Range<Int>
        if let shards {
            precondition(buckets.isEmpty && rest.count == arena.entries.count, "a sharded step has no buckets")
            var counts = shards.counts
            counts[0] += words
            try communicator.reduceScatter(UnsafeMutableBufferPointer(rebasing: sums[0..<(words + arena.count)]), counts: counts)
            mine = shards.ranges[communicator.rank]
            for i in extras.indices { extras[i] = communicator.rank == 0 ? sums[i] : 0 }
        } else {
            try communicator.allReduce(UnsafeMutableBufferPointer(rebasing: sums[0..<(words + span(rest).upperBound)]), op: .sum)
            mine = 0..<arena.count
            for i in extras.indices { extras[i] = sums[i] }
        }
        for (t, p) in arena.entries.enumerated() {
            let r = (p.offset..<(p.offset + p.count)).clamped(to: mine)
            if r.isEmpty { continue }
            FixedPoint.decode(sums.baseAddress! + words + r.lowerBound, r.count, exponent: exponents[t], into: p.grad + (r.lowerBound - p.offset))
        }
        return outcome
    }

    /// The one-shot reduction (no buckets): begin, then finish.
    func reduce(slotCount: Int, totalChunks: Int, stop: Bool, extras: inout [Int64], communicator: Communicator,
                shards: ShardLayout? = nil) throws -> Outcome {
        begin(slotCount: slotCount, totalChunks: totalChunks, words: extras.count, bucketBytes: 0, communicator: communicator)
        return try finish(stop: stop, extras: &extras, shards: shards)
    }

    /// Waits for the newest bucket's maxima, quantizes it and starts its integer sum (a poisoned
    /// bucket, the same on every rank, sends nothing: the step's gradients become NaN).
    private func startSum(ofLastBucket communicator: Communicator) throws {
        guard let b = buckets.last, let request = b.maxRequest else { return }
        try request.wait()
        b.maxRequest = nil
        if b.maxima[b.tensors.count] > 0 { nonFinite = true; return }
        quantize(b.tensors, maxima: UnsafeBufferPointer(b.maxima))
        let floats = span(b.tensors)
        b.sumRequest = try communicator.startAllReduce(UnsafeMutableBufferPointer(rebasing: sums[(words + floats.lowerBound)..<(words + floats.upperBound)]), op: .sum)
    }

    /// The arena offsets that the tensors `tensors` (consecutive, ascending) occupy.
    private func span(_ tensors: Range<Int>) -> Range<Int> {
        guard let first = tensors.first, let last = tensors.last else { return 0..<0 }
        let entries = arena.entries
        return entries[first].offset..<(entries[last].offset + entries[last].count)
    }

    /// This rank's largest |value| per tensor of `tensors` over its slots, into maxima[0...];
    /// true when some value is not finite.
    private func localMaxima(_ tensors: Range<Int>, into maxima: UnsafeMutableBufferPointer<Float>) -> Bool {
        var nonFinite = false
        for (k, t) in tensors.enumerated() {
            let p = arena.entries[t]
            var m = F8(), poison = F8()
            var tail: Float = 0
            for j in 0..<slotCount {
                let src = arena.slot(j).baseAddress! + p.offset
                var i = 0
                while i + 8 <= p.count {
                    let v = UnsafeRawPointer(src + i).loadUnaligned(as: F8.self)
                    let a = v.replacing(with: -v, where: v .< 0)
                    m = m.replacing(with: a, where: a .> m)    // NaN compares false: ignored here,
                    poison += v - v                            // ...and caught here (inf − inf = NaN)
                    i += 8
                }
                while i < p.count {
                    let v = src[i]
                    if !v.isFinite { nonFinite = true } else { tail = Swift.max(tail, abs(v)) }
                    i += 1
                }
            }
            if !(poison.sum() == 0) { nonFinite = true }
            maxima[k] = Swift.max(m.max(), tail)
        }
        return nonFinite
    }

    /// Integer sums over this rank's slots for `tensors`, one agreed scale per tensor (maxima[k]
    /// is tensor tensors[k]'s global maximum).
    private func quantize(_ tensors: Range<Int>, maxima: UnsafeBufferPointer<Float>) {
        for (k, t) in tensors.enumerated() {
            let p = arena.entries[t]
            exponents[t] = FixedPoint.scaleExponent(maximum: maxima[k], terms: totalChunks)
            let acc = sums.baseAddress! + words + p.offset
            acc.update(repeating: 0, count: p.count)
            // Tiles of the tensor, every slot per tile, so the Int64 tile stays in cache.
            var lo = 0
            while lo < p.count {
                let len = min(Self.tile, p.count - lo)
                for j in 0..<slotCount {
                    FixedPoint.accumulate(arena.slot(j).baseAddress! + p.offset + lo, len, exponent: exponents[t], into: acc + lo)
                }
                lo += len
            }
        }
    }
}
