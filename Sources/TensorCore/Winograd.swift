// Winograd F(m×m, 3×3) convolution of NCHW batches (3×3 kernel, stride 1, any padding up to 2):
// owns the transformed weights and the scratch buffers; the transforms are CKernels' winograd.c.
//
// A call convolves n samples: each sample is packed channels-innermost and its tiles
// transformed into α² matrices (n·tiles × in), one sgemm per element ξ multiplies them by the
// transformed weights (in × out), and the α² products are transformed back tile by tile. The
// GEMMs have in-channels as their inner dimension instead of 9·in, and α²/m² multiplications
// per output instead of 9: 4 for F(2,3), 2.25 for F(4,3) (Lavin & Gray 2016).
//
// Bits: the transforms give the same bits at every instruction-set level; the sgemm's depend
// on its shape (n·tiles rows), so callers that need batch-invariance (exact mode) call with
// chunk-aligned pieces of a fixed size, as the direct path does.
import CKernels

public final class WinogradConvolution {
    /// Output tile side m (2 or 4); α = m + 2.
    public let tile: Int
    public let inChannels: Int, outChannels: Int, height: Int, width: Int, padding: Int
    public let outHeight: Int, outWidth: Int
    let tilesHigh: Int, tilesWide: Int, elements: Int
    /// Tiles per sample.
    public var tilesPerSample: Int { tilesHigh * tilesWide }
    var tiles: Int { tilesPerSample }
    let weights: UnsafeMutablePointer<Float>      // α² × in × out
    private var packed: UnsafeMutablePointer<Float>, transformed: UnsafeMutablePointer<Float>
    private var products: UnsafeMutablePointer<Float>, outputTiles: UnsafeMutablePointer<Float>
    private var capacity = 0                       // samples the two tile buffers hold
    private var packedGradient: UnsafeMutablePointer<Float>?    // (th·m, tw·m, out), on first use
    /// dL/dU, α² × in × out, accumulated over a chunk's pieces by `accumulateWeightGradient`
    /// (allocated on first use: a convolution that only runs forward never needs it).
    private var weightGradient: UnsafeMutablePointer<Float>?

    /// Whether Winograd applies: a 3×3 kernel, stride 1, padding 0...2, and an output.
    public static func supports(kernel: Int, stride: Int, padding: Int, height: Int, width: Int) -> Bool {
        kernel == 3 && stride == 1 && (0...2).contains(padding) && height + 2 * padding >= 3 && width + 2 * padding >= 3
    }

    public init(tile: Int, inChannels: Int, outChannels: Int, height: Int, width: Int, padding: Int) {
        precondition(tile == 2 || tile == 4, "Winograd tile must be 2 or 4")
        precondition(Self.supports(kernel: 3, stride: 1, padding: padding, height: height, width: width))
        self.tile = tile
        self.inChannels = inChannels; self.outChannels = outChannels
        self.height = height; self.width = width; self.padding = padding
        outHeight = height + 2 * padding - 2
        outWidth = width + 2 * padding - 2
        tilesHigh = (outHeight + tile - 1) / tile
        tilesWide = (outWidth + tile - 1) / tile
        elements = (tile + 2) * (tile + 2)
        weights = .allocate(capacity: elements * inChannels * outChannels)
        weights.initialize(repeating: 0, count: elements * inChannels * outChannels)
        let packedCount = (tilesHigh * tile + 2) * (tilesWide * tile + 2) * inChannels
        packed = .allocate(capacity: packedCount)
        outputTiles = .allocate(capacity: tilesHigh * tile * tilesWide * tile * outChannels)
        transformed = .allocate(capacity: 1)
        products = .allocate(capacity: 1)
    }

    deinit {
        weights.deallocate(); packed.deallocate(); outputTiles.deallocate()
        transformed.deallocate(); products.deallocate()
        packedGradient?.deallocate()
        weightGradient?.deallocate()
    }

    /// Samples per call that keep the transformed tiles (and their products) within 512 KiB, half
    /// of a Zen 4 core's L2: measured on the CNN's and the ResNet's layers, bigger pieces made the
    /// α² sgemms read their operands from L3 and slowed them by up to 2×.
    public var preferredSamples: Int {
        let perSample = elements * tiles * max(inChannels, outChannels) * MemoryLayout<Float>.size
        return max(1, (512 << 10) / perSample)
    }

    /// Floats this convolution allocates for calls of `samples` samples: the transformed weights,
    /// the packed sample, the transformed tiles and their products, the output tiles, and with
    /// `weightGradient` the packed output gradient and dU.
    public func scratchFloats(samples n: Int, weightGradient: Bool) -> Int {
        let rows = n * tiles
        let base = elements * inChannels * outChannels + (tilesHigh * tile + 2) * (tilesWide * tile + 2) * inChannels
            + tilesHigh * tile * tilesWide * tile * outChannels
            + elements * (Self.leadingDimension(rows: rows, channels: inChannels) + Self.leadingDimension(rows: rows, channels: outChannels))
        return base + (weightGradient ? elements * inChannels * outChannels + tilesHigh * tile * tilesWide * tile * outChannels : 0)
    }

    /// Sets the transformed weights from w (outChannels, inChannels, 3, 3), or, with `flipped`,
    /// from the forward convolution's w (inChannels, outChannels, 3, 3) with each kernel rotated by
    /// 180°: the convolution that gives the forward's input gradient.
    public func setWeights(_ w: UnsafePointer<Float>, flipped: Bool = false) {
        if flipped {
            lockstep_winograd_weights(-1, Int32(tile), w, inChannels, outChannels, 1, weights)
        } else {
            lockstep_winograd_weights(-1, Int32(tile), w, outChannels, inChannels, 0, weights)
        }
    }

    /// Leading dimension of the α² matrices for `rows` tile rows of `channels`: a whole number of
    /// cache lines, odd, so that the α² rows a tile transform touches do not all fall in one L1
    /// set (at 16 tiles × 64 channels they were 4 KiB apart and the output transform ran 3-4×
    /// slower).
    static func leadingDimension(rows: Int, channels: Int) -> Int {
        let lines = (rows * channels + 15) / 16
        return (lines | 1) * 16
    }

    private func reserve(samples n: Int) {
        guard n > capacity else { return }
        transformed.deallocate(); products.deallocate()
        transformed = .allocate(capacity: elements * Self.leadingDimension(rows: n * tiles, channels: inChannels))
        products = .allocate(capacity: elements * Self.leadingDimension(rows: n * tiles, channels: outChannels))
        capacity = n
    }

    /// y (n, outChannels, outHeight, outWidth) = the convolution of x (n, inChannels, height, width)
    /// with the weights last set.
    public func apply(_ x: UnsafePointer<Float>, samples n: Int, into y: UnsafeMutablePointer<Float>) {
        guard n > 0 else { return }
        reserve(samples: n)
        let level = lockstep_kernel_level(), m = Int32(tile)
        let rows = n * tiles
        let ldv = Self.leadingDimension(rows: rows, channels: inChannels)
        let ldm = Self.leadingDimension(rows: rows, channels: outChannels)
        let hp = tilesHigh * tile + 2, wp = tilesWide * tile + 2, wq = tilesWide * tile
        let inSize = inChannels * height * width, outSize = outChannels * outHeight * outWidth
        for s in 0..<n {
            lockstep_winograd_pack(level, x + s * inSize, inChannels, height, width, padding, hp, wp, packed)
            lockstep_winograd_input(level, m, packed, wp, inChannels, tilesHigh, tilesWide,
                                    transformed + s * tiles * inChannels, ldv)
        }
        for e in 0..<elements {
            gemm(m: rows, n: outChannels, k: inChannels, a: transformed + e * ldv, lda: inChannels,
                 b: weights + e * inChannels * outChannels, ldb: outChannels, c: products + e * ldm, ldc: outChannels)
        }
        for s in 0..<n {
            lockstep_winograd_output(level, m, products + s * tiles * outChannels, ldm, outChannels,
                                     tilesHigh, tilesWide, outputTiles, wq)
            lockstep_winograd_unpack(level, outputTiles, wq, outChannels, outHeight, outWidth, y + s * outSize)
        }
    }

    /// dU (`weightGradient`) = (`accumulate` ? dU : 0) + Σ over the n samples' tiles of V·(A·dY·Aᵀ),
    /// element by element: V the input tiles of x (n, in, h, w) as `apply` makes them, dY
    /// (n, out, outHeight, outWidth). One sgemm per element sums over the piece's tiles.
    public func accumulateWeightGradient(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, samples n: Int,
                                         accumulate: Bool) {
        guard n > 0 else { return }
        reserve(samples: n)
        if weightGradient == nil {
            weightGradient = .allocate(capacity: elements * inChannels * outChannels)
            weightGradient!.initialize(repeating: 0, count: elements * inChannels * outChannels)
        }
        let du = weightGradient!
        let level = lockstep_kernel_level(), m = Int32(tile)
        let rows = n * tiles
        let ldv = Self.leadingDimension(rows: rows, channels: inChannels)
        let ldm = Self.leadingDimension(rows: rows, channels: outChannels)
        let hp = tilesHigh * tile + 2, wp = tilesWide * tile + 2
        let hq = tilesHigh * tile, wq = tilesWide * tile
        if packedGradient == nil { packedGradient = .allocate(capacity: hq * wq * outChannels) }
        let pg = packedGradient!
        let inSize = inChannels * height * width, outSize = outChannels * outHeight * outWidth
        for s in 0..<n {
            lockstep_winograd_pack(level, x + s * inSize, inChannels, height, width, padding, hp, wp, packed)
            lockstep_winograd_input(level, m, packed, wp, inChannels, tilesHigh, tilesWide,
                                    transformed + s * tiles * inChannels, ldv)
            lockstep_winograd_pack(level, dy + s * outSize, outChannels, outHeight, outWidth, 0, hq, wq, pg)
            lockstep_winograd_gradient_tiles(level, m, pg, wq, outChannels, tilesHigh, tilesWide,
                                             products + s * tiles * outChannels, ldm)
        }
        for e in 0..<elements {
            gemm(transA: true, m: inChannels, n: outChannels, k: rows, a: transformed + e * ldv, lda: inChannels,
                 b: products + e * ldm, ldb: outChannels, beta: accumulate ? 1 : 0,
                 c: du + e * inChannels * outChannels, ldc: outChannels)
        }
    }

    /// dw (out, in, 3, 3) += Gᵀ·dU·G, computed in double and rounded once per element.
    public func addWeightGradient(into dw: UnsafeMutablePointer<Float>) {
        guard let du = weightGradient else { preconditionFailure("addWeightGradient before accumulateWeightGradient") }
        lockstep_winograd_weight_gradient(-1, Int32(tile), du, outChannels, inChannels, dw)
    }
}
