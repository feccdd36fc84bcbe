// Conv2D over NCHW input: im2col + GEMM, a few samples per GEMM (whole chunks in exact mode), or
// Winograd F(m×m, 3×3) for 3×3 stride-1 layers (TensorCore's WinogradConvolution): the forward
// pass, the input gradient and, with 4 tiles or more per sample, the weight gradient.
import TensorCore

/// How a convolution computes its passes (config `conv.algorithm` or a layer's `algorithm`).
public enum ConvAlgorithm: String, Sendable, CaseIterable {
    /// Winograd F(4×4, 3×3) where it applies and has the channels to pay for its transforms
    /// (`Conv2D.autoWinogradChannels`), im2col + GEMM elsewhere.
    case auto
    /// im2col + GEMM.
    case direct
    /// Winograd F(4×4, 3×3); the layer must be 3×3 with stride 1.
    case winograd
    /// Winograd F(2×2, 3×3): fewer savings (2.25× fewer multiplications instead of 4×), a
    /// smaller error.
    case winogradF2 = "winograd-f2"

    /// The Winograd tile this choice gives a layer, or nil for im2col + GEMM.
    /// Throws for an explicit Winograd choice (`strict`) on a layer it does not apply to; a
    /// lenient one falls back to im2col + GEMM.
    func tile(layer: String, kernel: Int, stride: Int, padding: Int, height: Int, width: Int,
              inChannels: Int, outChannels: Int, strict: Bool) throws -> Int? {
        let fits = WinogradConvolution.supports(kernel: kernel, stride: stride, padding: padding, height: height, width: width)
        switch self {
        case .direct: return nil
        case .auto:
            return fits && min(inChannels, outChannels) >= Conv2D.autoWinogradChannels ? 4 : nil
        case .winograd, .winogradF2:
            guard fits else {
                if !strict { return nil }
                throw ShapeError("\(layer): algorithm '\(rawValue)' needs a 3x3 kernel with stride 1 and padding 0, 1 or 2 (got kernel \(kernel), stride \(stride), padding \(padding)); use 'direct' or 'auto'")
            }
            return self == .winograd ? 4 : 2
        }
    }
}

public final class Conv2D: Layer {
    public let name: String
    public let inputShape: [Int], outputShape: [Int]
    public let weight: Parameter   // (Cout, Cin, KH, KW)
    public let bias: Parameter?    // (Cout)
    public let geometry: ConvGeometry
    let outChannels: Int
    var input: Tensor?             // (N, Cin, H, W), borrowed from the previous layer
    var columns: Tensor?           // (Cin·KH·KW, chunk·HO·WO)
    var product: Tensor?           // (Cout, chunk·HO·WO)
    var output: Tensor?            // (N, Cout, HO, WO)
    var dProduct: Tensor?          // (Cout, chunk·HO·WO)
    var dColumns: Tensor?          // (Cin·KH·KW, chunk·HO·WO)
    var dInput: Tensor?            // (N, Cin, H, W)
    var chunking = Chunking.whole
    /// The algorithm asked for, and the Winograd convolutions it resolved to (nil: im2col + GEMM):
    /// one for the forward pass, one (with the kernels rotated) for the input gradient.
    public let algorithm: ConvAlgorithm
    let winogradForward: WinogradConvolution?
    let winogradBackward: WinogradConvolution?
    /// The Winograd tile side in use (2 or 4), or nil for im2col + GEMM.
    public var winogradTile: Int? { winogradForward?.tile }

    /// `auto` uses Winograd when both channel counts reach this. ncnn's rule is 16; measured here
    /// (`lockstep bench-conv`, docs/benchmarks.md) the 32→64, 48→48, 96→96 and 192→192 layers
    /// run 2-2.5× faster, and a 1-channel input (the first layer of every Fashion-MNIST model),
    /// which gives the α² GEMMs no inner dimension, 2-3× slower.
    public static let autoWinogradChannels = 16

    public init(name: String, inputShape: [Int], outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                bias: Bool = true, initializer: Initializer = .heNormal, algorithm: ConvAlgorithm = .auto,
                strictAlgorithm: Bool = true) throws {
        guard inputShape.count == 3 else {
            throw ShapeError("\(name): conv expects input of shape [channels, height, width], got \(inputShape)")
        }
        guard kernel > 0, stride > 0, padding >= 0, outChannels > 0 else {
            throw ShapeError("\(name): conv needs out > 0, kernel > 0, stride > 0 and padding >= 0")
        }
        let g = ConvGeometry(channels: inputShape[0], height: inputShape[1], width: inputShape[2],
                             kernelH: kernel, kernelW: kernel, stride: stride, padding: padding)
        guard g.outHeight > 0, g.outWidth > 0 else {
            throw ShapeError("\(name): kernel \(kernel) with padding \(padding) does not fit input \(inputShape)")
        }
        self.name = name
        self.inputShape = inputShape
        self.geometry = g
        self.outChannels = outChannels
        self.outputShape = [outChannels, g.outHeight, g.outWidth]
        weight = Parameter(name: "\(name).weight", shape: [outChannels, inputShape[0], kernel, kernel],
                           initializer: initializer, fanIn: g.patchSize, fanOut: outChannels * kernel * kernel,
                           isWeight: true)
        self.bias = bias ? Parameter(name: "\(name).bias", shape: [outChannels], initializer: .zeros) : nil
        self.algorithm = algorithm
        if let tile = try algorithm.tile(layer: name, kernel: kernel, stride: stride, padding: padding,
                                         height: g.height, width: g.width, inChannels: g.channels, outChannels: outChannels,
                                         strict: strictAlgorithm) {
            winogradForward = WinogradConvolution(tile: tile, inChannels: g.channels, outChannels: outChannels,
                                                  height: g.height, width: g.width, padding: padding)
            winogradBackward = WinogradConvolution(tile: tile, inChannels: outChannels, outChannels: g.channels,
                                                   height: g.outHeight, width: g.outWidth, padding: 2 - padding)
        } else {
            winogradForward = nil
            winogradBackward = nil
        }
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    /// Samples per im2col chunk: enough for an efficient GEMM, small enough that the column
    /// buffer (~1 MiB) stays in cache. With large output planes one sample already makes a good
    /// GEMM, and a chunk of one needs no transposition: its (Cout, HO·WO) product is NCHW.
    var chunkSize: Int {
        let plane = geometry.outHeight * geometry.outWidth
        return plane >= 512 ? 1 : max(1, (1 << 18) / (geometry.patchSize * plane))
    }

    /// Samples per GEMM: `chunkSize`, or in exact mode the largest divisor of the chunk not
    /// above it, so that GEMMs never straddle two chunks.
    func subBatch(_ n: Int, preferred: Int? = nil) -> Int {
        let want = preferred ?? chunkSize
        guard let g = chunking.size else { return min(want, max(n, 1)) }
        var s = min(want, g)
        while g % s != 0 { s -= 1 }
        return s
    }

    /// Calls body(first sample, samples, gradient slot) for each GEMM-sized piece of the batch
    /// (pieces of `preferred` samples, or the im2col `chunkSize`, never straddling a chunk).
    func forEachPiece(_ n: Int, preferred: Int? = nil, _ body: (Int, Int, Int) -> Void) {
        let sub = subBatch(n, preferred: preferred)
        chunking.forEach(n) { rows, slot in
            var start = rows.lowerBound
            while start < rows.upperBound {
                let m = min(sub, rows.upperBound - start)
                body(start, m, slot)
                start += m
            }
        }
    }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        let n = x.shape[0]
        input = x
        chunking = context.chunking
        if let winograd = winogradForward {
            let y = reuse(&output, [n] + outputShape)
            let inSize = inputShape.reduce(1, *), outSize = outputShape.reduce(1, *)
            winograd.setWeights(weight.value)
            forEachPiece(n, preferred: winograd.preferredSamples) { start, m, _ in
                winograd.apply(x.data + start * inSize, samples: m, into: y.data + start * outSize)
            }
            addBias(y)
            return y
        }
        let plane = geometry.outHeight * geometry.outWidth
        let y = reuse(&output, [n] + outputShape)
        let sub = subBatch(n)
        let cols = reuse(&columns, [geometry.patchSize, sub * plane])
        let prod = reuse(&product, [outChannels, sub * plane])
        let inSize = inputShape.reduce(1, *), outSize = outputShape.reduce(1, *)
        forEachPiece(n) { start, m, _ in
            im2col(x.data + start * inSize, batch: m, geometry: geometry, into: cols.data)
            let target = m == 1 ? y.data + start * outSize : prod.data
            gemm(m: outChannels, n: m * plane, k: geometry.patchSize, a: weight.value, lda: geometry.patchSize,
                 b: cols.data, ldb: m * plane, c: target, ldc: m * plane)
            if m > 1 { swapLeadingAxes(prod.data, outChannels, m, plane, into: y.data + start * outSize) }
        }
        addBias(y)
        return y
    }

    func addBias(_ y: Tensor) {
        guard let b = bias else { return }
        let plane = geometry.outHeight * geometry.outWidth
        for s in 0..<y.shape[0] {
            for c in 0..<outChannels { Vector.addScalar(b.value[c], y.data + (s * outChannels + c) * plane, plane) }
        }
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        let n = dOut.shape[0]
        let x = input!
        let dx = needInputGradient ? reuse(&dInput, [n] + inputShape) : nil
        let inSize = inputShape.reduce(1, *), outSize = outputShape.reduce(1, *)
        let winogradInput = needInputGradient ? winogradBackward : nil
        if let winograd = winogradForward, winogradWeightGradient {
            accumulateWinogradWeightGradient(winograd, dOut, x, n)
        }
        let directWeights = !winogradWeightGradient
        if directWeights || (needInputGradient && winogradInput == nil) {
            directBackward(dOut, x, n, weights: directWeights, dx: winogradInput == nil ? dx : nil)
        }
        if let winograd = winogradInput, let dx {
            // dX = dY convolved with the kernels rotated by 180° and in/out swapped, padding 2 − p.
            winograd.setWeights(weight.value, flipped: true)
            forEachPiece(n, preferred: winograd.preferredSamples) { start, m, _ in
                winograd.apply(dOut.data + start * outSize, samples: m, into: dx.data + start * inSize)
            }
        }
        return dx
    }

    /// A Winograd layer takes its weight gradient in the Winograd domain (dU summed over each
    /// chunk's tiles by one sgemm per element, then Gᵀ·dU·G per chunk) when a sample has at least
    /// this many tiles, and by im2col + GEMM otherwise. Measured (`lockstep bench-conv`, Zen 4,
    /// Cooperlake, chunks of 16): 96→96 on 7×7 (4 F(4,3) tiles) 62 µs per sample against 107 by
    /// im2col; 192→192 on 4×4 (1 tile) 154 against 136: the sums over 16 tiles are too short for
    /// the α² sgemms that accumulate a 192 × 192 matrix each.
    public static let winogradWeightGradientMinimumTiles = 4

    /// Whether this layer's weight gradient is Winograd's (see winogradWeightGradientMinimumTiles).
    public var winogradWeightGradient: Bool {
        (winogradForward?.tilesPerSample ?? 0) >= Self.winogradWeightGradientMinimumTiles
    }

    /// dW (and db) of each chunk in the Winograd domain, pieces of the forward's size.
    func accumulateWinogradWeightGradient(_ winograd: WinogradConvolution, _ dOut: Tensor, _ x: Tensor, _ n: Int) {
        let inSize = inputShape.reduce(1, *), outSize = outputShape.reduce(1, *)
        let plane = geometry.outHeight * geometry.outWidth
        let sub = subBatch(n, preferred: winograd.preferredSamples)
        chunking.forEach(n) { rows, slot in
            var start = rows.lowerBound
            while start < rows.upperBound {
                let m = min(sub, rows.upperBound - start)
                winograd.accumulateWeightGradient(x.data + start * inSize, dOut.data + start * outSize, samples: m,
                                                  accumulate: start > rows.lowerBound)
                if let b = bias {
                    let g = b.gradient(slot: slot)
                    for c in 0..<outChannels {
                        var total: Float = 0
                        for s in start..<(start + m) { total += Vector.sum(dOut.data + s * outSize + c * plane, plane) }
                        g[c] += total
                    }
                }
                start += m
            }
            winograd.addWeightGradient(into: weight.gradient(slot: slot))
        }
    }

    /// im2col + GEMM: dW and db if `weights`, and dX into `dx` if given.
    func directBackward(_ dOut: Tensor, _ x: Tensor, _ n: Int, weights: Bool, dx: Tensor?) {
        let plane = geometry.outHeight * geometry.outWidth
        let sub = subBatch(n)
        let cols = reuse(&columns, [geometry.patchSize, sub * plane])
        let dProd = reuse(&dProduct, [outChannels, sub * plane])
        let dCols = dx == nil ? nil : reuse(&dColumns, [geometry.patchSize, sub * plane])
        let inSize = inputShape.reduce(1, *), outSize = outputShape.reduce(1, *)
        forEachPiece(n) { start, m, slot in
            // dY' = this piece of dY as (Cout, m·HO·WO); for one sample that is dY itself.
            let dY: UnsafeMutablePointer<Float> = m == 1 ? dOut.data + start * outSize : dProd.data
            if m > 1 { swapLeadingAxes(dOut.data + start * outSize, m, outChannels, plane, into: dProd.data) }
            if weights {
                // The columns are recomputed per piece rather than kept for the whole batch:
                // cheaper than streaming a batch-sized buffer through memory twice.
                im2col(x.data + start * inSize, batch: m, geometry: geometry, into: cols.data)
                // dW += dY' · colsᵀ
                gemm(transB: true, m: outChannels, n: geometry.patchSize, k: m * plane,
                     a: dY, lda: m * plane, b: cols.data, ldb: m * plane,
                     beta: 1, c: weight.gradient(slot: slot), ldc: geometry.patchSize)
                if let b = bias {
                    let g = b.gradient(slot: slot)
                    for c in 0..<outChannels { g[c] += Vector.sum(dY + c * m * plane, m * plane) }
                }
            }
            if let dCols, let dx {
                // dCols = Wᵀ · dY', then scatter back to the input.
                gemm(transA: true, m: geometry.patchSize, n: m * plane, k: outChannels,
                     a: weight.value, lda: geometry.patchSize, b: dY, ldb: m * plane,
                     c: dCols.data, ldc: m * plane)
                col2im(dCols.data, batch: m, geometry: geometry, into: dx.data + start * inSize)
            }
        }
    }
}
