// Pooling over NCHW: max, average, and global average.
import CKernels
import TensorCore

func pooledSize(_ name: String, _ inputShape: [Int], size: Int, stride: Int, padding: Int = 0) throws -> [Int] {
    guard inputShape.count == 3 else {
        throw ShapeError("\(name): pooling expects input of shape [channels, height, width], got \(inputShape)")
    }
    guard size > 0, stride > 0 else { throw ShapeError("\(name): pooling needs size > 0 and stride > 0") }
    let ho = (inputShape[1] - size) / stride + 1, wo = (inputShape[2] - size) / stride + 1
    guard inputShape[1] >= size, inputShape[2] >= size, ho > 0, wo > 0 else {
        throw ShapeError("\(name): pool size \(size) is larger than input \(inputShape)")
    }
    return [inputShape[0], ho, wo]
}

public final class MaxPool2D: Layer {
    public let name: String
    public let inputShape: [Int], outputShape: [Int]
    let size: Int, stride: Int
    var output: Tensor?          // (N, C, HO, WO)
    var argmax: [Int32] = []     // (N, C, HO, WO): index within the input plane
    var dInput: Tensor?          // (N, C, H, W)
    /// Set by `fuseBatchNormReLU`: the batch norm two layers before pools in its own passes
    /// (BatchNorm.poolsMax), so this layer passes its input and output gradient through.
    public internal(set) var isFused = false

    public init(name: String, inputShape: [Int], size: Int, stride: Int? = nil) throws {
        self.name = name
        self.inputShape = inputShape
        self.size = size
        self.stride = stride ?? size
        self.outputShape = try pooledSize(name, inputShape, size: size, stride: self.stride)
    }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        if isFused { return x }
        let n = x.shape[0]
        let c = inputShape[0], h = inputShape[1], w = inputShape[2]
        let ho = outputShape[1], wo = outputShape[2]
        let y = reuse(&output, [n] + outputShape)
        if argmax.count != y.count { argmax = [Int32](repeating: 0, count: y.count) }
        argmax.withUnsafeMutableBufferPointer { am in
            for plane in 0..<(n * c) {
                let src = x.data + plane * h * w
                let dst = y.data + plane * ho * wo
                let idx = am.baseAddress! + plane * ho * wo
                if size == 2 && stride == 2 {
                    lockstep_maxpool2x2(-1, src, w, ho, wo, dst, idx)   // CKernels: vectorised there
                    continue
                }
                for oh in 0..<ho {
                    for ow in 0..<wo {
                        var best = -Float.infinity
                        var bestIndex = 0
                        for kh in 0..<size {
                            let row = (oh * stride + kh) * w
                            for kw in 0..<size {
                                let i = row + ow * stride + kw
                                let v = src[i]
                                if v > best || (kh == 0 && kw == 0) { best = v; bestIndex = i }
                            }
                        }
                        dst[oh * wo + ow] = best
                        idx[oh * wo + ow] = Int32(bestIndex)
                    }
                }
            }
        }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        guard needInputGradient else { return nil }
        if isFused { return dOut }
        let n = dOut.shape[0]
        let c = inputShape[0], planeIn = inputShape[1] * inputShape[2]
        let planeOut = outputShape[1] * outputShape[2]
        let dx = reuse(&dInput, [n] + inputShape)
        dx.fill(0)
        argmax.withUnsafeBufferPointer { am in
            for plane in 0..<(n * c) {
                let g = dOut.data + plane * planeOut
                let d = dx.data + plane * planeIn
                let idx = am.baseAddress! + plane * planeOut
                for i in 0..<planeOut { d[Int(idx[i])] += g[i] }
            }
        }
        return dx
    }
}

public final class AvgPool2D: Layer {
    public let name: String
    public let inputShape: [Int], outputShape: [Int]
    let size: Int, stride: Int
    var output: Tensor?          // (N, C, HO, WO)
    var dInput: Tensor?          // (N, C, H, W)

    public init(name: String, inputShape: [Int], size: Int, stride: Int? = nil) throws {
        self.name = name
        self.inputShape = inputShape
        self.size = size
        self.stride = stride ?? size
        self.outputShape = try pooledSize(name, inputShape, size: size, stride: self.stride)
    }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        let n = x.shape[0]
        let c = inputShape[0], h = inputShape[1], w = inputShape[2]
        let ho = outputShape[1], wo = outputShape[2]
        let scale = 1 / Float(size * size)
        let y = reuse(&output, [n] + outputShape)
        for plane in 0..<(n * c) {
            let src = x.data + plane * h * w
            let dst = y.data + plane * ho * wo
            for oh in 0..<ho {
                for ow in 0..<wo {
                    var s: Float = 0
                    for kh in 0..<size {
                        let row = src + (oh * stride + kh) * w + ow * stride
                        for kw in 0..<size { s += row[kw] }
                    }
                    dst[oh * wo + ow] = s * scale
                }
            }
        }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        guard needInputGradient else { return nil }
        let n = dOut.shape[0]
        let c = inputShape[0], h = inputShape[1], w = inputShape[2]
        let ho = outputShape[1], wo = outputShape[2]
        let scale = 1 / Float(size * size)
        let dx = reuse(&dInput, [n] + inputShape)
        dx.fill(0)
        for plane in 0..<(n * c) {
            let g = dOut.data + plane * ho * wo
            let d = dx.data + plane * h * w
            for oh in 0..<ho {
                for ow in 0..<wo {
                    let v = g[oh * wo + ow] * scale
                    for kh in 0..<size {
                        let row = d + (oh * stride + kh) * w + ow * stride
                        for kw in 0..<size { row[kw] += v }
                    }
                }
            }
        }
        return dx
    }
}

/// (N, C, H, W) → (N, C): the mean over each channel's plane.
public final class GlobalAvgPool: Layer {
    public let name: String
    public let inputShape: [Int], outputShape: [Int]
    var output: Tensor?          // (N, C)
    var dInput: Tensor?          // (N, C, H, W)

    public init(name: String, inputShape: [Int]) throws {
        guard inputShape.count == 3 else {
            throw ShapeError("\(name): global average pooling expects [channels, height, width], got \(inputShape)")
        }
        self.name = name
        self.inputShape = inputShape
        self.outputShape = [inputShape[0]]
    }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        let n = x.shape[0], c = inputShape[0], plane = inputShape[1] * inputShape[2]
        let y = reuse(&output, [n, c])
        for p in 0..<(n * c) {
            let src = x.data + p * plane
            var s: Float = 0
            for i in 0..<plane { s += src[i] }
            y.data[p] = s / Float(plane)
        }
        return y
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        guard needInputGradient else { return nil }
        let n = dOut.shape[0], c = inputShape[0], plane = inputShape[1] * inputShape[2]
        let dx = reuse(&dInput, [n] + inputShape)
        for p in 0..<(n * c) {
            let v = dOut.data[p] / Float(plane)
            (dx.data + p * plane).update(repeating: v, count: plane)
        }
        return dx
    }
}

/// (N, ...) → (N, product of the rest): a view, no copy.
public final class Flatten: Layer {
    public let name: String
    public let inputShape: [Int], outputShape: [Int]

    public init(name: String, inputShape: [Int]) {
        self.name = name
        self.inputShape = inputShape
        self.outputShape = [inputShape.reduce(1, *)]
    }

    public func forward(_ x: Tensor, context: ForwardContext) throws -> Tensor {
        x.reshaped([x.shape[0]] + outputShape)
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) throws -> Tensor? {
        needInputGradient ? dOut.reshaped([dOut.shape[0]] + inputShape) : nil
    }
}
