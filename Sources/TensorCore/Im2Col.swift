// im2col / col2im for 2-D convolution over a whole batch.
//
// Column layout: (C·KH·KW, N·HO·WO) row-major, so one GEMM with the weight matrix (Cout, C·KH·KW)
// convolves the whole batch; the product comes out as (Cout, N·HO·WO).

public struct ConvGeometry: Equatable, Sendable {
    public let channels, height, width, kernelH, kernelW, stride, padding: Int
    public var outHeight: Int { (height + 2 * padding - kernelH) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - kernelW) / stride + 1 }
    public var patchSize: Int { channels * kernelH * kernelW }

    public init(channels: Int, height: Int, width: Int, kernelH: Int, kernelW: Int, stride: Int, padding: Int) {
        self.channels = channels; self.height = height; self.width = width
        self.kernelH = kernelH; self.kernelW = kernelW; self.stride = stride; self.padding = padding
    }
}

/// x: (N, C, H, W) → col: (C·KH·KW, N·HO·WO).
public func im2col(_ x: UnsafePointer<Float>, batch n: Int, geometry g: ConvGeometry,
                   into col: UnsafeMutablePointer<Float>) {
    let ho = g.outHeight, wo = g.outWidth
    let plane = ho * wo
    let rowLength = n * plane
    for c in 0..<g.channels {
        for kh in 0..<g.kernelH {
            for kw in 0..<g.kernelW {
                let row = (c * g.kernelH + kh) * g.kernelW + kw
                let dst0 = col + row * rowLength
                for s in 0..<n {
                    let src = x + (s * g.channels + c) * g.height * g.width
                    let dst = dst0 + s * plane
                    for oh in 0..<ho {
                        let ih = oh * g.stride - g.padding + kh
                        let d = dst + oh * wo
                        if ih < 0 || ih >= g.height {
                            for ow in 0..<wo { d[ow] = 0 }
                            continue
                        }
                        let srow = src + ih * g.width
                        if g.stride == 1 {
                            // Contiguous run with zero borders.
                            let shift = kw - g.padding
                            let lo = max(0, -shift), hi = min(wo, g.width - shift)
                            // Short rows: plain loops inline better than memcpy calls.
                            for ow in 0..<min(lo, wo) { d[ow] = 0 }
                            if hi > lo { for ow in lo..<hi { d[ow] = srow[ow + shift] } }
                            if hi < wo { for ow in max(hi, lo)..<wo { d[ow] = 0 } }
                        } else {
                            for ow in 0..<wo {
                                let iw = ow * g.stride - g.padding + kw
                                d[ow] = (iw >= 0 && iw < g.width) ? srow[iw] : 0
                            }
                        }
                    }
                }
            }
        }
    }
}

/// col: (C·KH·KW, N·HO·WO) → dx: (N, C, H, W), summing overlapping patches. dx is overwritten.
public func col2im(_ col: UnsafePointer<Float>, batch n: Int, geometry g: ConvGeometry,
                   into dx: UnsafeMutablePointer<Float>) {
    let ho = g.outHeight, wo = g.outWidth
    let plane = ho * wo
    let rowLength = n * plane
    dx.update(repeating: 0, count: n * g.channels * g.height * g.width)
    for c in 0..<g.channels {
        for kh in 0..<g.kernelH {
            for kw in 0..<g.kernelW {
                let row = (c * g.kernelH + kh) * g.kernelW + kw
                let src0 = col + row * rowLength
                for s in 0..<n {
                    let dst = dx + (s * g.channels + c) * g.height * g.width
                    let src = src0 + s * plane
                    for oh in 0..<ho {
                        let ih = oh * g.stride - g.padding + kh
                        if ih < 0 || ih >= g.height { continue }
                        let drow = dst + ih * g.width
                        let srow = src + oh * wo
                        if g.stride == 1 {
                            let shift = kw - g.padding
                            let lo = max(0, -shift), hi = min(wo, g.width - shift)
                            if hi > lo {
                                for ow in lo..<hi { drow[ow + shift] += srow[ow] }
                            }
                        } else {
                            for ow in 0..<wo {
                                let iw = ow * g.stride - g.padding + kw
                                if iw >= 0 && iw < g.width { drow[iw] += srow[ow] }
                            }
                        }
                    }
                }
            }
        }
    }
}
