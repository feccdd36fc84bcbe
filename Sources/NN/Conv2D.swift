// Conv2D over NCHW input as im2col + GEMM, a few samples per GEMM (whole chunks in exact mode).
import TensorCore

public final class Conv2D: Layer {
    public let name: String
    public let inputShape: [Int], outputShape: [Int]
    public let weight: Parameter   // (Cout, Cin, KH, KW)
    public let bias: Parameter?    // (Cout)
    let geometry: ConvGeometry
    let outChannels: Int
    var input: Tensor?             // (N, Cin, H, W), borrowed from the previous layer
    var columns: Tensor?           // (Cin·KH·KW, chunk·HO·WO)
    var product: Tensor?           // (Cout, chunk·HO·WO)
    var output: Tensor?            // (N, Cout, HO, WO)
    var dProduct: Tensor?          // (Cout, chunk·HO·WO)
    var dColumns: Tensor?          // (Cin·KH·KW, chunk·HO·WO)
    var dInput: Tensor?            // (N, Cin, H, W)
    var chunking = Chunking.whole

    public init(name: String, inputShape: [Int], outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                bias: Bool = true, initializer: Initializer = .heNormal) throws {
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
    func subBatch(_ n: Int) -> Int {
        guard let g = chunking.size else { return min(chunkSize, max(n, 1)) }
        var s = min(chunkSize, g)
        while g % s != 0 { s -= 1 }
        return s
    }

    /// Calls body(first sample, samples, gradient slot) for each GEMM-sized piece of the batch.
    func forEachPiece(_ n: Int, _ body: (Int, Int, Int) -> Void) {
        let sub = subBatch(n)
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
        if let b = bias {
            for s in 0..<n {
                for c in 0..<outChannels { Vector.addScalar(b.value[c], y.data + (s * outChannels + c) * plane, plane) }
            }
        }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        let n = dOut.shape[0]
        let x = input!
        let plane = geometry.outHeight * geometry.outWidth
        let sub = subBatch(n)
        let cols = reuse(&columns, [geometry.patchSize, sub * plane])
        let dProd = reuse(&dProduct, [outChannels, sub * plane])
        let dCols = needInputGradient ? reuse(&dColumns, [geometry.patchSize, sub * plane]) : nil
        let dx = needInputGradient ? reuse(&dInput, [n] + inputShape) : nil
        let inSize = inputShape.reduce(1, *), outSize = outputShape.reduce(1, *)
        forEachPiece(n) { start, m, slot in
            // dY' = this piece of dY as (Cout, m·HO·WO); for one sample that is dY itself.
            let dY: UnsafeMutablePointer<Float> = m == 1 ? dOut.data + start * outSize : dProd.data
            if m > 1 { swapLeadingAxes(dOut.data + start * outSize, m, outChannels, plane, into: dProd.data) }
            // The columns are recomputed per piece rather than kept for the whole batch: cheaper
            // than streaming a batch-sized buffer through memory twice.
            im2col(x.data + start * inSize, batch: m, geometry: geometry, into: cols.data)
            // dW += dY' · colsᵀ
            gemm(transB: true, m: outChannels, n: geometry.patchSize, k: m * plane,
                 a: dY, lda: m * plane, b: cols.data, ldb: m * plane,
                 beta: 1, c: weight.gradient(slot: slot), ldc: geometry.patchSize)
            if let b = bias {
                let g = b.gradient(slot: slot)
                for c in 0..<outChannels { g[c] += Vector.sum(dY + c * m * plane, m * plane) }
            }
            if let dCols, let dx {
                // dCols = Wᵀ · dY', then scatter back to the input.
                gemm(transA: true, m: geometry.patchSize, n: m * plane, k: outChannels,
                     a: weight.value, lda: geometry.patchSize, b: dY, ldb: m * plane,
                     c: dCols.data, ldc: m * plane)
                col2im(dCols.data, batch: m, geometry: geometry, into: dx.data + start * inSize)
            }
        }
        return dx
    }
}
