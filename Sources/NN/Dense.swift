// Dense (fully connected): y = x·Wᵀ + b, with W of shape (out, in) as in PyTorch.
import TensorCore

public final class Dense: Layer {
    public let name: String
    public let inputShape: [Int], outputShape: [Int]
    public let weight: Parameter   // (out, in)
    public let bias: Parameter?    // (out)
    let inFeatures: Int, outFeatures: Int
    var input: Tensor?             // (N, in), borrowed from the previous layer
    var output: Tensor?            // (N, out)
    var dInput: Tensor?            // (N, in)

    public init(name: String, inputShape: [Int], outFeatures: Int, bias: Bool = true,
                initializer: Initializer = .heNormal) throws {
        guard inputShape.count == 1 else {
            throw ShapeError("\(name): dense expects a flat input of shape [features], got \(inputShape); add a flatten layer before it")
        }
        guard outFeatures > 0 else { throw ShapeError("\(name): dense needs out > 0, got \(outFeatures)") }
        self.name = name
        self.inputShape = inputShape
        self.inFeatures = inputShape[0]
        self.outFeatures = outFeatures
        self.outputShape = [outFeatures]
        weight = Parameter(name: "\(name).weight", shape: [outFeatures, inFeatures], initializer: initializer,
                           fanIn: inFeatures, fanOut: outFeatures, isWeight: true)
        self.bias = bias ? Parameter(name: "\(name).bias", shape: [outFeatures], initializer: .zeros) : nil
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        let n = x.shape[0]
        let y = reuse(&output, [n, outFeatures])
        input = x
        gemm(transB: true, m: n, n: outFeatures, k: inFeatures,
             a: x.data, lda: inFeatures, b: weight.value, ldb: inFeatures, c: y.data, ldc: outFeatures)
        if let b = bias {
            for i in 0..<n {
                let row = y.data + i * outFeatures
                for j in 0..<outFeatures { row[j] += b.value[j] }
            }
        }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        let x = input!
        let n = x.shape[0]
        // dW += dYᵀ · X
        gemm(transA: true, m: outFeatures, n: inFeatures, k: n,
             a: dOut.data, lda: outFeatures, b: x.data, ldb: inFeatures,
             beta: 1, c: weight.grad, ldc: inFeatures)
        if let b = bias { addColumnSums(dOut.data, rows: n, cols: outFeatures, into: b.grad) }
        guard needInputGradient else { return nil }
        // dX = dY · W
        let dx = reuse(&dInput, [n, inFeatures])
        gemm(m: n, n: inFeatures, k: outFeatures, a: dOut.data, lda: outFeatures,
             b: weight.value, ldb: inFeatures, c: dx.data, ldc: inFeatures)
        return dx
    }
}
