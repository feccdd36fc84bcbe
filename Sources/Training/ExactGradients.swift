// Exact mode's gradient reduction: chunk sums rounded to per-tensor fixed point and summed in
// integers, optionally in buckets that overlap backward.
//
// The scale of each tensor is agreed one step ahead: step n rounds its values to multiples of
// 2^-s, with s derived from the largest |chunk sum| of step n-1 over every rank (`scaleMaxima`,
// kept in checkpoints) and `growthBits` of headroom for growth. Dense weights round their chunk
// sums while they are still in registers (HotGradient, CKernels' fixed_dense.c); every other
// parameter's chunk sums land in slots (Arena.useChunkSlots), rounded here after backward.
// 1. Each rank adds its rounded values in Int64: integer sums are exact, so the order of chunks
//    and ranks does not matter.
// 2. Two collectives, started together: an Int64 all-reduce (sum) of the integers, with the
//    step's metric words riding along; and a small float all-reduce (max) of this step's largest
//    |chunk sum| per tensor, a non-finite flag and the stop flag.
// 3. If every tensor's global maximum fit the scale (below 2^(budget - headroom) after scaling,
//    so no sum can overflow, and at least `minimumBits` above its unit, so no precision is
//    lost), every rank decodes the same integers into the same floats. Otherwise (the first
//    step, where no maxima exist yet, or a jump of more than 2^growthBits) every rank knows it
//    from the same maxima: the step is run again with scales from those maxima. A tensor
//    without a previous maximum (nil exponent) only measures, and passes only if it is all zero.
// With buckets (train.bucket_mb > 0) both collectives start per bucket of whole tensors as soon
// as backward has finished them (the tail of the arena first); scales and sums are per tensor,
// so the bits are those of the one-shot reduction. Error bound: see FixedPoint (ExactSum.swift).
import Collectives
import NN
import TensorCore

final class ExactGradientReducer {
    let arena: Arena
    /// Elements per tile of the slot sum: 32 KiB of Int64, within L1/L2.
    static let tile = 4096
    /// How far (in powers of two) a tensor's largest chunk sum may grow over the previous step's
    /// before the step is measured again.
    static let growthBits = 6
    /// The least number of bits a tensor's largest value keeps after scaling (float carries 24).
    static let minimumBits = 30
    /// Every tensor's largest |chunk sum| over all ranks in the last pass: the next step's scales
    /// (nil before the first step of a run that did not restore them).
    var scaleMaxima: [Float]?
    /// Metric words first, then the gradients' integer sums (so the last bucket, from tensor 0,
    /// is contiguous with the words). Stable storage: buckets in flight point into it.
    private var sums = UnsafeMutableBufferPointer<Int64>.allocate(capacity: 0)
    private var words = 0
    private var slotCount = 0, totalChunks = 0
    /// This pass's scale exponent per tensor; nil: no maximum known, the tensor only measures.
    private var exponents: [Int?]
    /// Per tensor: the global maximum once its all-reduce is back.
    private var measured: [Float]
    private var nonFinite = false
    private var bucketFloats = Int.max
    private var unsentTensor = 0
    private var communicator: Communicator?
    private var hot: [HotGradient?]

    private final class Bucket {
        let tensors: Range<Int>
        /// Per tensor, then the non-finite flag; stable storage for the all-reduce in flight.
        let maxima: UnsafeMutableBufferPointer<Float>
        var maxRequest: PendingCollective?
        var sumRequest: PendingCollective?
        init(tensors: Range<Int>, extra: Int) {
            self.tensors = tensors
            maxima = .allocate(capacity: tensors.count + extra)
            maxima.initialize(repeating: 0)
        }
        deinit { maxima.deallocate() }
    }
    private var buckets: [Bucket] = []

    init(arena: Arena) {
        self.arena = arena
        exponents = [Int?](repeating: nil, count: arena.entries.count)
        measured = [Float](repeating: 0, count: arena.entries.count)
        hot = arena.entries.map { $0.quantizesWhileHot ? HotGradient(acc: UnsafeMutablePointer(bitPattern: 8)!, exponent: nil) : nil }
    }
    deinit {
        sums.deallocate()
        for p in arena.entries { p.hot = nil }
    }

    struct Outcome {
        /// Some rank asked to stop after this step.
        var stop: Bool
        /// Some rank's gradient held an infinity or NaN (the gradients are then NaN).
        var nonFinite: Bool
        /// A tensor's values did not fit its scale: run the step again (scales now fit).
        var retry: Bool
    }

    /// Before the step's backward passes (each pass of a retried step too): scales from the last
    /// maxima, zeroed sums, the hot targets. `bucketBytes` 0 reduces everything in `finish`.
    func begin(slotCount: Int, totalChunks: Int, words: Int, bucketBytes: Int, communicator: Communicator) {
        (self.slotCount, self.totalChunks, self.words, self.communicator) = (slotCount, totalChunks, words, communicator)
        if sums.count != arena.count + words {
            sums.deallocate()
            sums = .allocate(capacity: arena.count + words)
        }
        sums.update(repeating: 0)
        for t in exponents.indices {
            exponents[t] = scaleMaxima.flatMap { m in
                m[t] > 0 && m[t].isFinite ? FixedPoint.scaleExponent(maximum: m[t], terms: totalChunks) - Self.growthBits : nil
            }
        }
        for (t, p) in arena.entries.enumerated() {
            guard let h = hot[t] else { continue }
            h.acc = sums.baseAddress! + words + p.offset
            h.exponent = exponents[t]
            h.maxAbs = 0
            h.nonFinite = false
            p.hot = h
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
            let bucket = Bucket(tensors: first..<unsentTensor, extra: 1)
            bucket.maxima[bucket.tensors.count] = reduceLocally(bucket.tensors, maxima: bucket.maxima) ? 1 : 0
            bucket.maxRequest = try communicator.startAllReduce(bucket.maxima, op: .max)
            let floats = span(bucket.tensors)
            bucket.sumRequest = try communicator.startAllReduce(UnsafeMutableBufferPointer(rebasing: sums[(words + floats.lowerBound)..<(words + floats.upperBound)]), op: .sum)
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
        let rest = Bucket(tensors: 0..<unsentTensor, extra: 2)
        // A non-finite loss (its words' overflow counter) poisons the step like a gradient does,
        // so every rank learns of it even when only rank 0 receives the summed words.
        let lossNonFinite = words >= ExactSum.width && extras[ExactSum.limbs] != 0
        rest.maxima[rest.tensors.count] = reduceLocally(rest.tensors, maxima: rest.maxima) || lossNonFinite ? 1 : 0
        rest.maxima[rest.tensors.count + 1] = stop ? 1 : 0
        rest.maxRequest = try communicator.startAllReduce(rest.maxima, op: .max)
        for (i, e) in extras.enumerated() { sums[i] = e }
        let mine: Range<Int>
        if let shards {
            precondition(buckets.isEmpty && rest.tensors.count == arena.entries.count, "a sharded step has no buckets")
            var counts = shards.counts
            counts[0] += words
            try communicator.reduceScatter(UnsafeMutableBufferPointer(rebasing: sums[0..<(words + arena.count)]), counts: counts)
            mine = shards.ranges[communicator.rank]
            for i in extras.indices { extras[i] = communicator.rank == 0 ? sums[i] : 0 }
        } else {
            try communicator.allReduce(UnsafeMutableBufferPointer(rebasing: sums[0..<(words + span(rest.tensors).upperBound)]), op: .sum)
            mine = 0..<arena.count
            for i in extras.indices { extras[i] = sums[i] }
        }
        for b in buckets + [rest] {
            try b.maxRequest?.wait()
            try b.sumRequest?.wait()
            for (k, t) in b.tensors.enumerated() { measured[t] = b.maxima[k] }
            if b.maxima[b.tensors.count] > 0 { nonFinite = true }
        }
        let outcome = Outcome(stop: rest.maxima[rest.tensors.count + 1] > 0, nonFinite: nonFinite, retry: false)
        if outcome.nonFinite {   // every rank knows it alike
            arena.flatGrads.update(repeating: .nan)
            return outcome
        }
        let fits = measured.indices.allSatisfy { t in
            guard measured[t] > 0 else { return true }
            guard let s = exponents[t] else { return false }
            let top = Int(measured[t].exponent) + s   // measured·2^s lies in [2^top, 2^(top+1))
            return top + 1 <= FixedPoint.budget - FixedPoint.headroomBits(terms: totalChunks) && top >= Self.minimumBits
        }
        scaleMaxima = measured
        if !fits { return Outcome(stop: false, nonFinite: false, retry: true) }
        for (t, p) in arena.entries.enumerated() {
            let r = (p.offset..<(p.offset + p.count)).clamped(to: mine)
            if r.isEmpty { continue }
            guard let s = exponents[t] else { (p.grad + (r.lowerBound - p.offset)).update(repeating: 0, count: r.count); continue }
            FixedPoint.decode(sums.baseAddress! + words + r.lowerBound, r.count, exponent: s, into: p.grad + (r.lowerBound - p.offset))
        }
        return outcome
    }

    /// This rank's largest |chunk sum| per tensor of `tensors` into maxima[0...] (hot tensors
    /// report theirs; slot tensors are scanned, then rounded into the sums); true when some
    /// value is not finite.
    private func reduceLocally(_ tensors: Range<Int>, maxima: UnsafeMutableBufferPointer<Float>) -> Bool {
        var bad = false
        for (k, t) in tensors.enumerated() {
            if let h = hot[t] {
                maxima[k] = h.maxAbs
                bad = bad || h.nonFinite
            } else {
                bad = localMaximum(t, into: &maxima[k]) || bad
                if let s = exponents[t] { quantize(t, exponent: s) }
            }
        }
        return bad
    }

    /// The arena offsets that the tensors `tensors` (consecutive, ascending) occupy.
    private func span(_ tensors: Range<Int>) -> Range<Int> {
        guard let first = tensors.first, let last = tensors.last else { return 0..<0 }
        let entries = arena.entries
        return entries[first].offset..<(entries[last].offset + entries[last].count)
    }

    /// This rank's largest |value| of tensor t over its slots; true when some value is not finite.
    private func localMaximum(_ t: Int, into maximum: inout Float) -> Bool {
        var nonFinite = false
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
        maximum = Swift.max(m.max(), tail)
        return nonFinite
    }

    /// Integer sums of tensor t over this rank's slots, at scale 2^exponent.
    private func quantize(_ t: Int, exponent: Int) {
        let p = arena.entries[t]
        let acc = sums.baseAddress! + words + p.offset
        // Tiles of the tensor, every slot per tile, so the Int64 tile stays in cache.
        var lo = 0
        while lo < p.count {
            let len = min(Self.tile, p.count - lo)
            for j in 0..<slotCount {
                FixedPoint.accumulate(arena.slot(j).baseAddress! + p.offset + lo, len, exponent: exponent, into: acc + lo)
            }
            lo += len
        }
    }
}
