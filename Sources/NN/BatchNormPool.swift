// Batch norm over channels with its ReLU and a 2×2 max pool fused in (BatchNorm.poolsMax, set by
// fuseBatchNormReLU): training's read-write pass writes the pooled plane, each window's choice and
// x at it (CKernels norm.c), and backward expands the pool's output gradient one plane at a time
// in cache. The bits are those of the three layers apart (NNTests/FusionTests).
import CKernels
import TensorCore

extension BatchNorm {
    /// One plane's scratch for the fused passes (the forward pass's, the largest).
    func ensureScratch() {
        let floats = lockstep_bn_pool_scratch_floats(inputShape[1], inputShape[2])
        if scratch.count < floats { scratch = [Float](repeating: 0, count: floats) }
    }

    /// Evaluation: the separate layers' arithmetic, for their bits, one plane at a time in cache.
    func evaluatePooled(_ x: Tensor, into y: Tensor) {
        let c = channels, s = spatial, ho = inputShape[1] / 2, wo = inputShape[2] / 2
        if poolIndices.count < ho * wo { poolIndices = [Int32](repeating: 0, count: ho * wo) }
        ensureScratch()
        let (scale, shift) = evaluationAffine()
        poolIndices.withUnsafeMutableBufferPointer { idx in
            scratch.withUnsafeMutableBufferPointer { sp in
                for plane in 0..<(x.shape[0] * c) {
                    let ch = plane % c
                    Vector.affine(x.data + plane * s, sp.baseAddress!, s, scale: scale[ch], shift: shift[ch])
                    Vector.relu(sp.baseAddress!, sp.baseAddress!, s)
                    lockstep_maxpool2x2(-1, sp.baseAddress!, inputShape[2], ho, wo, y.data + plane * ho * wo, idx.baseAddress!)
                }
            }
        }
    }

    /// Training: normalise, rectify and pool with the batch's statistics (`means`, `invStd`).
    func normalizePooled(_ x: Tensor, into y: Tensor) {
        let n = x.shape[0], c = channels, s = spatial, so = s / 4, h = inputShape[1], w = inputShape[2]
        let level = lockstep_kernel_level()
        let xm = reuse(&maxInput, y.shape)
        if codes.count < y.count { codes = [UInt8](repeating: 0, count: y.count) }
        ensureScratch()
        let g = gamma.value!, b = beta.value!
        codes.withUnsafeMutableBufferPointer { code in
            scratch.withUnsafeMutableBufferPointer { sp in
                for i in 0..<n {
                    for ch in 0..<c {
                        let plane = i * c + ch
                        lockstep_bn_forward_pool(level, x.data + plane * s, h, w, means[ch], invStd[ch], g[ch], b[ch],
                                                 sp.baseAddress!, y.data + plane * so, code.baseAddress! + plane * so, xm.data + plane * so)
                    }
                }
            }
        }
    }

    /// Adds sample i's Σg (into `a`) and Σg·x̂ (into `b`), per channel, from the pooled gradient.
    func pooledGradientSums(_ dOut: Tensor, sample i: Int, into a: UnsafeMutablePointer<Double>, _ b: UnsafeMutablePointer<Double>) {
        let c = channels, so = spatial / 4, h = inputShape[1], w = inputShape[2], xm = maxInput!.data
        let level = lockstep_kernel_level()
        var o: (Float, Float) = (0, 0)
        codes.withUnsafeBufferPointer { code in
            scratch.withUnsafeMutableBufferPointer { sp in
                for ch in 0..<c {
                    let plane = i * c + ch
                    withUnsafeMutableBytes(of: &o) {
                        lockstep_bn_pool_gradient_sums(level, dOut.data + plane * so, code.baseAddress! + plane * so, xm + plane * so,
                                                       h, w, means[ch], invStd[ch], sp.baseAddress!,
                                                       $0.baseAddress!.assumingMemoryBound(to: Float.self))
                    }
                    a[ch] += Double(o.0)
                    b[ch] += Double(o.1)
                }
            }
        }
    }

    /// dx (the input's shape) from the pooled gradient: k·(g − meanDy − x̂·meanDyXhat) per channel.
    func pooledInputGradient(_ dOut: Tensor, into dx: Tensor, k: [Float], meanDy: [Float], meanDyXhat: [Float]) {
        let n = dOut.shape[0], c = channels, s = spatial, so = s / 4, h = inputShape[1], w = inputShape[2], x = input!.data
        let level = lockstep_kernel_level()
        codes.withUnsafeBufferPointer { code in
            scratch.withUnsafeMutableBufferPointer { sp in
                for i in 0..<n {
                    for ch in 0..<c {
                        let plane = i * c + ch
                        lockstep_bn_pool_input_gradient(level, dOut.data + plane * so, code.baseAddress! + plane * so, x + plane * s,
                                                        dx.data + plane * s, h, w, means[ch], invStd[ch], k[ch], meanDy[ch],
                                                        meanDyXhat[ch], sp.baseAddress!)
                    }
                }
            }
        }
    }
}
