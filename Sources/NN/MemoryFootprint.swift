// How many floats a layer keeps for a batch: its output, what backward reads (cached inputs,
// normalised values, masks), its input gradient and its workspaces (im2col columns). The
// trainer's memory estimate (Training/MemoryPlan.swift) adds these up before any allocation;
// layers allocate these buffers lazily, once per batch shape (`reuse`).
extension Layer {
    /// Floats this layer holds after a training step on `n` samples (forward and backward).
    public func activationFloats(batch n: Int) -> Int {
        let inputs = n * inputShape.reduce(1, *), outputs = n * outputShape.reduce(1, *)
        switch self {
        case let block as Residual:
            return (block.inner + block.shortcut).reduce(2 * outputs + inputs) { $0 + $1.activationFloats(batch: n) }
        case let conv as Conv2D:
            // Columns and their gradient (patch × sub·plane), the product and its gradient, and
            // the Winograd convolutions' transformed weights and tiles.
            let plane = conv.geometry.outHeight * conv.geometry.outWidth
            let sub = min(conv.chunkSize, max(n, 1))
            let winograd = [conv.winogradForward, conv.winogradBackward].reduce(0) { total, w in
                total + (w.map { $0.scratchFloats(samples: min($0.preferredSamples, max(n, 1)), weightGradient: conv.winogradWeightGradient) } ?? 0)
            }
            return outputs + inputs + 2 * sub * plane * (conv.geometry.patchSize + conv.outChannels) + winograd
        case let relu as ReLU where relu.isFused:
            return 0   // the batch norm before it applies it (fuseBatchNormReLU)
        case let pool as MaxPool2D where pool.isFused:
            return 0   // the batch norm two layers before pools (fuseBatchNormReLU)
        case let bn as BatchNorm where bn.poolsMax:
            return inputs + inputs / 2 + inputs / 16   // dx; the pooled y and x at the maxima; the choices (bytes)
        case is Flatten:
            return 0   // a reshaped view
        case let bn as BatchNorm where bn.inputShape.count == 3:
            return outputs + inputs       // over channels x̂ is recomputed from the input
        case is BatchNorm, is GroupNorm, is Dropout:
            return 2 * outputs + inputs   // normalised values or the mask
        default:
            return outputs + inputs
        }
    }

    /// Floats an evaluation batch of `n` adds to a trained layer's buffers (a layer reallocates
    /// its output for a larger batch; workspaces keep their size, backward buffers stay).
    public func evaluationExtraFloats(batch n: Int, trainingBatch t: Int) -> Int {
        switch self {
        case let block as Residual:
            return (block.inner + block.shortcut).reduce(max(0, n - t) * outputShape.reduce(1, *)) {
                $0 + $1.evaluationExtraFloats(batch: n, trainingBatch: t)
            }
        case let relu as ReLU where relu.isFused: return 0
        case let pool as MaxPool2D where pool.isFused: return 0
        case let bn as BatchNorm where bn.poolsMax:
            return max(0, n - t) * outputShape.reduce(1, *) / 4   // the pooled output (planes pass through a scratch)
        case is Flatten: return 0
        default: return max(0, n - t) * outputShape.reduce(1, *)
        }
    }
}
