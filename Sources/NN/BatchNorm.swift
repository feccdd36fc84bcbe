// Batch normalisation (Ioffe & Szegedy 2015) over features of (N, F) input or over channels
// of (N, C, H, W) input.
//
// Training uses the batch's statistics, evaluation the running ones. Statistics are
// accumulated in Double per channel, with the sum of squared deviations computed about a shift
// near the mean (the chunk's first plane's mean for channels, the local mean for features),
// never as float32 E[x²]−E[x]², per chunk (the whole local batch on the float path) and summed
// with ExactSum, so they do not depend on how samples are spread over ranks. Over channels the
// passes are CKernels' (norm.c): one read for the moments, one read-write that normalises (and
// applies a fused ReLU), and backward recomputes x̂ from x instead of storing it. With a ReLU
// and a 2×2 max pool fused in (`poolsMax`), the read-write pass writes only the pooled plane,
// each window's choice and x there, and backward starts from the pooled gradient.
// `SyncBatchNorm` (SyncBatchNorm.swift) overrides only the reduction hooks below to make "the batch" the global batch across ranks.
import CKernels
import Collectives
import Foundation
import TensorCore

public class BatchNorm: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    public let gamma: Parameter          // (C)
    public let beta: Parameter           // (C)
    public let runningMean: Parameter    // (C), buffer
    public let runningVar: Parameter     // (C), buffer
    public let momentum: Float
    public let epsilon: Float
    let channels: Int, spatial: Int
    var normalized: Tensor?              // (N, F): x̂, for features only
    var input: Tensor?                   // (N, C, S): x, borrowed (x̂ is recomputed from it)
    var means: [Float]                   // (C): the batch means of the last forward
    var output: Tensor?                  // (N, C, S)
    var dInput: Tensor?                  // (N, C, S)
    var invStd: [Float]                  // (C)
    var globalCount = 0                  // samples·S behind the statistics of the last forward
    var stats: [Double]                  // (2C + 1): packed sums for one reduction
    var mode: Mode = .training
    var chunking = Chunking.whole
    /// Set by `fuseBatchNormReLU` when a ReLU follows a batch norm over channels (C, H, W): the
    /// output is relu(γx̂ + β) and backward takes the ReLU's output gradient (the ReLU layer
    /// passes both directions through). Not for (N, F) input, whose per-feature loops run
    /// across rows: a masked gradient there measured slower than the separate ReLU.
    public internal(set) var appliesReLU = false
    /// Set by `fuseBatchNormReLU` when a 2×2 max pool with stride 2 follows that ReLU over
    /// planes of even height and width: the output is the pooled plane (the pool layer passes
    /// both directions through) and backward takes the pool's output gradient, with the bits of
    /// the three layers apart. One read of x forward writes a quarter of it (three quarters of
    /// the separate layers' traffic saved each way, see norm.c).
    public internal(set) var poolsMax = false
    var codes: [UInt8] = []              // (N, C, S/4): each window's choice (poolsMax)
    var maxInput: Tensor?                // (N, C, H/2, W/2): x at each window's choice (poolsMax)
    var poolIndices: [Int32] = []        // (S/4): one plane's pool choices in evaluation (poolsMax)
    var scratch: [Float] = []            // one plane before its pool, or its expanded gradient and x (poolsMax)
    /// The output's shape for `n` samples: the input's, or pooled (poolsMax).
    func outputShape(samples n: Int) -> [Int] {
        poolsMax ? [n, channels, inputShape[1] / 2, inputShape[2] / 2] : [n] + inputShape
    }

    public init(name: String, inputShape: [Int], momentum: Float = LayerDefaults.batchNormMomentum, epsilon: Float = LayerDefaults.normEpsilon) throws {
        guard inputShape.count == 1 || inputShape.count == 3 else {
            throw ShapeError("\(name): batchnorm expects [features] or [channels, height, width], got \(inputShape)")
        }
        guard momentum >= 0, momentum <= 1, epsilon > 0 else {
            throw ShapeError("\(name): batchnorm needs 0 <= momentum <= 1 and epsilon > 0")
        }
        self.name = name
        self.inputShape = inputShape
        self.momentum = momentum
        self.epsilon = epsilon
        channels = inputShape[0]
        spatial = inputShape.dropFirst().reduce(1, *)
        gamma = Parameter(name: "\(name).weight", shape: [channels], initializer: .ones)
        beta = Parameter(name: "\(name).bias", shape: [channels], initializer: .zeros)
        runningMean = Parameter(name: "\(name).running_mean", shape: [channels], initializer: .zeros)
        runningVar = Parameter(name: "\(name).running_var", shape: [channels], initializer: .ones)
        invStd = [Float](repeating: 0, count: channels)
        means = invStd
        stats = [Double](repeating: 0, count: 2 * channels + 1)
    }

    public var parameters: [Parameter] { [gamma, beta] }
    public var buffers: [Parameter] { [runningMean, runningVar] }

    /// Combines ExactSum-encoded per-channel sums: forward [Σx (C), Σx² (C)] and the count,
    /// backward [Σdy (C), Σdy·x̂ (C)]. Local batch norm keeps its own; SyncBatchNorm sums them
    /// over ranks.
    func reduceExact(_ packed: UnsafeMutableBufferPointer<Int64>) throws {}

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        mode = context.mode
        chunking = context.chunking
        let n = x.shape[0]
        let y = reuse(&output, outputShape(samples: n))
        if context.mode == .evaluation {
            if poolsMax { evaluatePooled(x, into: y) } else { evaluate(x, into: y) }
            return y
        }
        return try train(x, into: y, context: context)
    }

    /// Evaluation: the running statistics' affine map (and the fused ReLU) into y, x's shape.
    func evaluate(_ x: Tensor, into y: Tensor) {
        let n = x.shape[0], c = channels, s = spatial
        let (scale, shift) = evaluationAffine()
        for i in 0..<n {
            for ch in 0..<c {
                let base = (i * c + ch) * s
                Vector.affine(x.data + base, y.data + base, s, scale: scale[ch], shift: shift[ch])
            }
        }
        if appliesReLU { Vector.relu(y.data, y.data, y.count) }
    }

    /// Evaluation's per-channel y = scale·x + shift, from the running statistics.
    func evaluationAffine() -> (scale: [Float], shift: [Float]) {
        var scale = [Float](repeating: 0, count: channels), shift = scale
        for ch in 0..<channels {
            let inv = 1 / (runningVar.value[ch] + epsilon).squareRoot()
            scale[ch] = gamma.value[ch] * inv
            shift[ch] = beta.value[ch] - runningMean.value[ch] * scale[ch]
        }
        return (scale, shift)
    }

    /// Training: the batch's statistics (exact over chunks and ranks), then normalise into y.
    func train(_ x: Tensor, into y: Tensor, context: ForwardContext) throws -> Tensor {
        let n = x.shape[0], c = channels, s = spatial
        // Per-channel Σx and Σx² (as squared deviations about the local mean + (Σx)²/n, Double),
        // per chunk (the whole local batch on the float path), then summed exactly over chunks
        // and ranks: one code path, whatever the mode.
        let w = ExactSum.width
        var exact = [Int64](repeating: 0, count: 2 * c * w + 1)
        var chunkStats = [Double](repeating: 0, count: 2 * c)
        context.chunking.forEach(n) { rows, _ in
            statistics(x, rows, into: &chunkStats)
            exact.withUnsafeMutableBufferPointer { e in ExactSum.addColumns(chunkStats, count: 2 * c, into: e.baseAddress!) }
        }
        exact[2 * c * w] = Int64(n * s)
        try exact.withUnsafeMutableBufferPointer { try reduceExact($0) }
        exact.withUnsafeBufferPointer { e in
            for v in 0..<(2 * c) { stats[v] = ExactSum.columnValue(e.baseAddress!, count: 2 * c, index: v) }
        }
        stats[2 * c] = Double(exact[2 * c * w])
        let count = Int(stats[2 * c])
        globalCount = count
        // Local BN on a rank that holds no samples this step (the last batch of an epoch can
        // have fewer chunks than ranks) has nothing to normalise and no statistics to update.
        guard count > 1 || (count == 0 && n == 0) else {
            throw ShapeError("\(name): batch norm in training needs more than one value per channel, got \(count); use a larger batch")
        }
        input = x
        for ch in 0..<c where count > 0 {
            let mean = stats[ch] / Double(count)
            // Double arithmetic: the cancellation costs ~1e-16·(mean²/var) relative, harmless.
            let variance = max(stats[c + ch] / Double(count) - mean * mean, 0)
            invStd[ch] = Float(1 / (variance + Double(epsilon)).squareRoot())
            means[ch] = Float(mean)
            let m = momentum
            runningMean.value[ch] = (1 - m) * runningMean.value[ch] + m * Float(mean)
            let unbiased = Float(variance * Double(count) / Double(count - 1))
            runningVar.value[ch] = (1 - m) * runningVar.value[ch] + m * unbiased
        }
        if s == 1 {
            // Raw pointers only in the loop: reading the class's `invStd` array there left the
            // loop at the mercy of the optimiser (unrelated code added to this module once made
            // it 15x slower: 0.05 → 0.8 ms on the MLP).
            let g = gamma.value!, b = beta.value!
            let xhat = reuse(&normalized, x.shape)
            invStd.withUnsafeBufferPointer { inv in
                means.withUnsafeBufferPointer { mu in
                    for i in 0..<n {
                        let src = x.data + i * c, xh = xhat.data + i * c, dst = y.data + i * c
                        for ch in 0..<c {
                            let v = (src[ch] - mu[ch]) * inv[ch]
                            xh[ch] = v
                            dst[ch] = g[ch] * v + b[ch]
                        }
                    }
                }
            }
            return y
        }
        if poolsMax {
            normalizePooled(x, into: y)
            return y
        }
        let level = lockstep_kernel_level(), relu: Int32 = appliesReLU ? 1 : 0
        for i in 0..<n {
            for ch in 0..<c {
                let base = (i * c + ch) * s
                lockstep_bn_forward(level, x.data + base, y.data + base, s, means[ch], invStd[ch],
                                    gamma.value[ch], beta.value[ch], relu)
            }
        }
        return y
    }

    /// Σx (C) then Σx² (C, as M2 about the rows' mean + (Σx)²/n) of samples `rows`, into `st`.
    func statistics(_ x: Tensor, _ rows: Range<Int>, into st: inout [Double]) {
        let c = channels, s = spatial, count = rows.count * s
        for v in 0..<(2 * c) { st[v] = 0 }
        guard count > 0 else { return }
        st.withUnsafeMutableBufferPointer { st in
            let sum = st.baseAddress!, sq = st.baseAddress! + c
            if s == 1 {
                // (N, F) input: accumulate column-wise so that the loops run along rows.
                for i in rows {
                    let row = x.data + i * c
                    for ch in 0..<c { sum[ch] += Double(row[ch]) }
                }
                let mean = (0..<c).map { Float(sum[$0] / Double(count)) }
                for i in rows {
                    let row = x.data + i * c
                    for ch in 0..<c { let d = Double(row[ch] - mean[ch]); sq[ch] += d * d }
                }
            } else {
                // One pass: Σ(x − K) and Σ(x − K)² about K, the mean of the chunk's first plane of
                // the channel (near the chunk's mean, so the M2 = Σ(x−K)² − (Σ(x−K))²/n below
                // cancels little), then Σx = Σ(x − K) + n·K.
                let level = lockstep_kernel_level()
                var o: (Float, Float) = (0, 0)
                var shift = [Float](repeating: 0, count: c)
                for ch in 0..<c {
                    withUnsafeMutableBytes(of: &o) { lockstep_plane_moments(level, x.data + (rows.lowerBound * c + ch) * s, s, 0, $0.baseAddress!.assumingMemoryBound(to: Float.self)) }
                    shift[ch] = o.0 / Float(s)
                }
                for i in rows {
                    for ch in 0..<c {
                        withUnsafeMutableBytes(of: &o) { lockstep_plane_moments(level, x.data + (i * c + ch) * s, s, shift[ch], $0.baseAddress!.assumingMemoryBound(to: Float.self)) }
                        sum[ch] += Double(o.0)
                        sq[ch] += Double(o.1)
                    }
                }
                for ch in 0..<c {
                    sq[ch] -= sum[ch] * sum[ch] / Double(count)
                    sum[ch] += Double(shift[ch]) * Double(count)
                }
            }
            // Σx² = M2 + (Σx)²/n, exact in Double to ~1e-16 relative.
            for ch in 0..<c { sq[ch] += sum[ch] * sum[ch] / Double(count) }
        }
    }

    /// Σdy (C) then Σdy·x̂ (C) over samples `rows`, into `st` (x̂ stored for features, recomputed
    /// from x for channels).
    func gradientSums(_ dOut: Tensor, _ xhat: Tensor?, _ x: Tensor?, _ rows: Range<Int>, into st: inout [Double]) {
        let c = channels, s = spatial
        for v in 0..<(2 * c) { st[v] = 0 }
        st.withUnsafeMutableBufferPointer { st in
            let a = st.baseAddress!, b = st.baseAddress! + c
            let y = appliesReLU && !poolsMax ? UnsafePointer(output!.data) : nil
            let level = lockstep_kernel_level()
            var o: (Float, Float) = (0, 0)
            for i in rows {
                if poolsMax {
                    pooledGradientSums(dOut, sample: i, into: a, b)
                } else if s == 1 {
                    let g = dOut.data + i * c, xh = xhat!.data + i * c
                    for ch in 0..<c { a[ch] += Double(g[ch]); b[ch] += Double(g[ch] * xh[ch]) }
                } else {
                    for ch in 0..<c {
                        let base = (i * c + ch) * s
                        withUnsafeMutableBytes(of: &o) {
                            lockstep_bn_gradient_sums(level, dOut.data + base, x!.data + base, y.map { $0 + base }, s, means[ch], invStd[ch],
                                                      $0.baseAddress!.assumingMemoryBound(to: Float.self))
                        }
                        a[ch] += Double(o.0)
                        b[ch] += Double(o.1)
                    }
                }
            }
        }
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        precondition(mode == .training, "\(name): backward after an evaluation forward")
        let n = dOut.shape[0]
        if globalCount == 0 { return reuse(&dInput, [n] + inputShape) }   // no samples here (see forward)
        let c = channels, s = spatial
        let xhat = s == 1 ? normalized! : nil, x = s == 1 ? nil : input!
        var sums = [Double](repeating: 0, count: 2 * c)
        // Each chunk's γ/β gradient goes to its slot (the gradient itself on the float path);
        // the sums behind dx are exact over chunks and ranks.
        let w = ExactSum.width
        var exact = [Int64](repeating: 0, count: 2 * c * w)
        var chunkSums = sums
        chunking.forEach(n) { rows, slot in
            gradientSums(dOut, xhat, x, rows, into: &chunkSums)
            let gb = beta.gradient(slot: slot), gg = gamma.gradient(slot: slot)
            for ch in 0..<c { gb[ch] += Float(chunkSums[ch]); gg[ch] += Float(chunkSums[c + ch]) }
            exact.withUnsafeMutableBufferPointer { e in ExactSum.addColumns(chunkSums, count: 2 * c, into: e.baseAddress!) }
        }
        guard needInputGradient else { return nil }
        try exact.withUnsafeMutableBufferPointer { try reduceExact($0) }
        exact.withUnsafeBufferPointer { e in
            for v in 0..<(2 * c) { sums[v] = ExactSum.columnValue(e.baseAddress!, count: 2 * c, index: v) }
        }
        let dx = reuse(&dInput, [n] + inputShape)
        let total = Double(globalCount)
        let meanDy = (0..<c).map { Float(sums[$0] / total) }
        let meanDyXhat = (0..<c).map { Float(sums[c + $0] / total) }
        let k = (0..<c).map { gamma.value[$0] * invStd[$0] }
        let y = appliesReLU && !poolsMax ? output!.data : nil
        if let xhat {
            for i in 0..<n {
                let g = dOut.data + i * c, xh = xhat.data + i * c, d = dx.data + i * c
                for ch in 0..<c { d[ch] = k[ch] * (g[ch] - meanDy[ch] - xh[ch] * meanDyXhat[ch]) }
            }
            return dx
        }
        let level = lockstep_kernel_level()
        if poolsMax {
            pooledInputGradient(dOut, into: dx, k: k, meanDy: meanDy, meanDyXhat: meanDyXhat)
            return dx
        }
        for i in 0..<n {
            for ch in 0..<c {
                let base = (i * c + ch) * s
                lockstep_bn_input_gradient(level, dOut.data + base, x!.data + base, y.map { UnsafePointer($0) + base }, dx.data + base, s,
                                           means[ch], invStd[ch], k[ch], meanDy[ch], meanDyXhat[ch])
            }
        }
        return dx
    }
}
