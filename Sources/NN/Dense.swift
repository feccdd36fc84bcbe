// Dense (fully connected): y = x·Wᵀ + b, with W of shape (out, in) as in PyTorch. Forward and the
// input gradient go through CKernels' row-wise GEMM (batch-invariant); in exact mode the weight
// gradient's chunk sums are added in the chunk tree while hot (tree_dense.c), on the float path
// one sgemm per local batch adds into the gradient.
import CKernels
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
    var weightT: Tensor?           // forward: Wᵀ (in, out) or Xᵀ (in, N)
    var outputT: Tensor?           // forward with Xᵀ: Yᵀ (out, N)
    var packed: Tensor?            // exact weight gradient: packed dY and X (tree_dense.c)
    var chunking = Chunking.whole

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
        weight.sumsOwnChunks = true
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        let n = x.shape[0]
        let y = reuse(&output, [n, outFeatures])
        input = x
        chunking = context.chunking
        // Y = X·Wᵀ with every element a fused multiply-add chain of its own over the inputs in
        // order (CKernels' rowwise.c), so that a sample's output does not depend on the samples
        // beside it (exact mode needs that; OpenBLAS's sgemm does not promise it). The chain
        // needs one operand transposed: Wᵀ, or for a small batch Xᵀ (then Yᵀ = W·Xᵀ, transposed
        // back): the same products in the same order, so the same bits, with fewer floats moved.
        if n * (inFeatures + outFeatures) < inFeatures * outFeatures {
            let xT = reuse(&weightT, [inFeatures, n]), yT = reuse(&outputT, [outFeatures, n])
            lockstep_transpose(x.data, n, inFeatures, xT.data)
            lockstep_rowwise_gemm(-1, weight.value, inFeatures, xT.data, n, outFeatures, n, inFeatures, yT.data, n)
            lockstep_transpose(yT.data, outFeatures, n, y.data)
        } else {
            let wT = reuse(&weightT, [inFeatures, outFeatures])
            lockstep_transpose(weight.value, outFeatures, inFeatures, wT.data)
            lockstep_rowwise_gemm(-1, x.data, inFeatures, wT.data, outFeatures, n, outFeatures, inFeatures, y.data, outFeatures)
        }
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
        let dx = needInputGradient ? reuse(&dInput, [n, inFeatures]) : nil
        if let blocks = weight.hot, let size = chunking.size {
            // Every chunk's dYᵀ·X, added in the chunk tree as it leaves the registers.
            let dst = blocks.bases.map { $0.map { $0 + weight.offset } }
            let scratch = reuse(&packed, [lockstep_tree_dense_scratch(n, outFeatures)])
            lockstep_tree_dense_wgrad(-1, dOut.data, x.data, n, outFeatures, inFeatures, size,
                                      Int32(blocks.first.count), blocks.first, blocks.count, dst, scratch.data)
        }
        chunking.forEach(n) { rows, slot in
            let dY = dOut.data + rows.lowerBound * outFeatures
            if weight.hot == nil || chunking.size == nil {
                // dW += dYᵀ · X over this chunk's rows
                gemm(transA: true, m: outFeatures, n: inFeatures, k: rows.count,
                     a: dY, lda: outFeatures, b: x.data + rows.lowerBound * inFeatures, ldb: inFeatures,
                     beta: 1, c: weight.gradient(slot: slot), ldc: inFeatures)
            }
            if let b = bias { addColumnSums(dY, rows: rows.count, cols: outFeatures, into: b.gradient(slot: slot)) }
        }
        if let dx {   // dX = dY · W, row by row as in forward
            lockstep_rowwise_gemm(-1, dOut.data, outFeatures, weight.value, inFeatures, n, inFeatures, outFeatures, dx.data, inFeatures)
        }
        return dx
    }
}
