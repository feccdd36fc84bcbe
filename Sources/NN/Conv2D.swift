// Conv2D over NCHW input as im2col + one GEMM for the whole batch.
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

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        let n = x.shape[0]
        input = x
        let plane = geometry.outHeight * geometry.outWidth
        let y = reuse(&output, [n] + outputShape)
        let chunk = min(chunkSize, max(n, 1))
        let cols = reuse(&columns, [geometry.patchSize, chunk * plane])
        let prod = reuse(&product, [outChannels, chunk * plane])
        let inSize = inputShape.reduce(1, *), outSize = outputShape.reduce(1, *)
        var start = 0
        while start < n {
            let m = min(chunk, n - start)
            im2col(x.data + start * inSize, batch: m, geometry: geometry, into: cols.data)
            let target = m == 1 ? y.data + start * outSize : prod.data
            gemm(m: outChannels, n: m * plane, k: geometry.patchSize, a: weight.value, lda: geometry.patchSize,
                 b: cols.data, ldb: m * plane, c: target, ldc: m * plane)
            if m > 1 { swapLeadingAxes(prod.data, outChannels, m, plane, into: y.data + start * outSize) }
            start += m
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
        let chunk = min(chunkSize, max(n, 1))
        let cols = reuse(&columns, [geometry.patchSize, chunk * plane])
        let dProd = reuse(&dProduct, [outChannels, chunk * plane])
        let dCols = needInputGradient ? reuse(&dColumns, [geometry.patchSize, chunk * plane]) : nil
        let dx = needInputGradient ? reuse(&dInput, [n] + inputShape) : nil
        let inSize = inputShape.reduce(1, *), outSize = outputShape.reduce(1, *)
        var start = 0
        while start < n {
            let m = min(chunk, n - start)
            // dY' = this chunk of dY as (Cout, m·HO·WO); for one sample that is dY itself.
            let dY: UnsafeMutablePointer<Float> = m == 1 ? dOut.data + start * outSize : dProd.data
            if m > 1 { swapLeadingAxes(dOut.data + start * outSize, m, outChannels, plane, into: dProd.data) }
            // The columns are recomputed per chunk rather than kept for the whole batch: cheaper
            // than streaming a batch-sized buffer through memory twice.
            im2col(x.data + start * inSize, batch: m, geometry: geometry, into: cols.data)
            // dW += dY' · colsᵀ
            gemm(transB: true, m: outChannels, n: geometry.patchSize, k: m * plane,
                 a: dY, lda: m * plane, b: cols.data, ldb: m * plane,
                 beta: 1, c: weight.grad, ldc: geometry.patchSize)
            if let b = bias {
                for c in 0..<outChannels { b.grad[c] += Vector.sum(dY + c * m * plane, m * plane) }
            }
            if let dCols, let dx {
                // dCols = Wᵀ · dY', then scatter back to the input.
                gemm(transA: true, m: geometry.patchSize, n: m * plane, k: outChannels,
                     a: weight.value, lda: geometry.patchSize, b: dY, ldb: m * plane,
                     c: dCols.data, ldc: m * plane)
                col2im(dCols.data, batch: m, geometry: geometry, into: dx.data + start * inSize)
            }
            start += m
        }
        return dx
    }
}
