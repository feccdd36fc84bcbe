// Conv2D over NCHW input as im2col + one GEMM for the whole batch.
import TensorCore

public final class Conv2D: Layer {
    public let name: String
    public let inputShape: [Int], outputShape: [Int]
    public let weight: Parameter   // (Cout, Cin, KH, KW)
    public let bias: Parameter?    // (Cout)
    let geometry: ConvGeometry
    let outChannels: Int
    var columns: Tensor?           // (Cin·KH·KW, N·HO·WO)
    var product: Tensor?           // (Cout, N·HO·WO)
    var output: Tensor?            // (N, Cout, HO, WO)
    var dProduct: Tensor?          // (Cout, N·HO·WO)
    var dColumns: Tensor?          // (Cin·KH·KW, N·HO·WO)
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

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        let n = x.shape[0]
        let plane = geometry.outHeight * geometry.outWidth
        let cols = reuse(&columns, [geometry.patchSize, n * plane])
        im2col(x.data, batch: n, geometry: geometry, into: cols.data)
        let prod = reuse(&product, [outChannels, n * plane])
        gemm(m: outChannels, n: n * plane, k: geometry.patchSize, a: weight.value, lda: geometry.patchSize,
             b: cols.data, ldb: n * plane, c: prod.data, ldc: n * plane)
        let y = reuse(&output, [n] + outputShape)
        swapLeadingAxes(prod.data, outChannels, n, plane, into: y.data)
        if let b = bias {
            for s in 0..<n {
                for c in 0..<outChannels {
                    let p = y.data + (s * outChannels + c) * plane
                    let v = b.value[c]
                    for i in 0..<plane { p[i] += v }
                }
            }
        }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        let n = dOut.shape[0]
        let plane = geometry.outHeight * geometry.outWidth
        let dProd = reuse(&dProduct, [outChannels, n * plane])
        swapLeadingAxes(dOut.data, n, outChannels, plane, into: dProd.data)
        // dW += dY' · colsᵀ
        gemm(transB: true, m: outChannels, n: geometry.patchSize, k: n * plane,
             a: dProd.data, lda: n * plane, b: columns!.data, ldb: n * plane,
             beta: 1, c: weight.grad, ldc: geometry.patchSize)
        if let b = bias {
            for c in 0..<outChannels {
                let row = dProd.data + c * n * plane
                var s: Float = 0
                for i in 0..<(n * plane) { s += row[i] }
                b.grad[c] += s
            }
        }
        guard needInputGradient else { return nil }
        // dCols = Wᵀ · dY', then scatter back to the input.
        let dCols = reuse(&dColumns, [geometry.patchSize, n * plane])
        gemm(transA: true, m: geometry.patchSize, n: n * plane, k: outChannels,
             a: weight.value, lda: geometry.patchSize, b: dProd.data, ldb: n * plane,
             c: dCols.data, ldc: n * plane)
        let dx = reuse(&dInput, [n] + inputShape)
        col2im(dCols.data, batch: n, geometry: geometry, into: dx.data)
        return dx
    }
}
