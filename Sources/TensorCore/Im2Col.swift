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
                let same = SameSpan(g, kh: kh, kw: kw)   // depends on the tap only
                let shift = kw - g.padding, inside = insideOutputs(stride: g.stride, shift: shift, width: g.width, outWidth: wo)
                for s in 0..<n {
                    let src = x + (s * g.channels + c) * g.height * g.width
                    let dst = dst0 + s * plane
                    if let span = same {
                        span.copy(from: src, to: dst)
                        continue
                    }
                    for oh in 0..<ho {
                        let ih = oh * g.stride - g.padding + kh
                        let d = dst + oh * wo
                        if ih < 0 || ih >= g.height {
                            for ow in 0..<wo { d[ow] = 0 }
                            continue
                        }
                        let srow = src + ih * g.width
                        // Zero borders around the outputs whose tap lies inside the row (short
                        // rows: plain loops inline better than memcpy calls).
                        for ow in 0..<inside.lowerBound { d[ow] = 0 }
                        if g.stride == 1 {
                            for ow in inside { d[ow] = srow[ow + shift] }   // a contiguous run
                        } else {
                            for ow in inside { d[ow] = srow[ow * g.stride + shift] }
                        }
                        for ow in inside.upperBound..<wo { d[ow] = 0 }
                    }
                }
            }
        }
    }
}

/// col: (C·KH·KW, N·HO·WO) → dx: (N, C, H, W), summing overlapping patches. dx is overwritten;
/// col is scratch: its entries for taps outside the image (which add nothing) are set to zero.
public func col2im(_ col: UnsafeMutablePointer<Float>, batch n: Int, geometry g: ConvGeometry,
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
                let same = SameSpan(g, kh: kh, kw: kw)   // depends on the tap only
                let shift = kw - g.padding, inside = insideOutputs(stride: g.stride, shift: shift, width: g.width, outWidth: wo)
                for s in 0..<n {
                    let dst = dx + (s * g.channels + c) * g.height * g.width
                    let src = src0 + s * plane
                    if let span = same {
                        span.accumulate(from: src, into: dst)
                        continue
                    }
                    for oh in 0..<ho {
                        let ih = oh * g.stride - g.padding + kh
                        if ih < 0 || ih >= g.height { continue }
                        let drow = dst + ih * g.width
                        let srow = src + oh * wo
                        if g.stride == 1 {
                            for ow in inside { drow[ow + shift] += srow[ow] }
                        } else {
                            for ow in inside { drow[ow * g.stride + shift] += srow[ow] }
                        }
                    }
                }
            }
        }
    }
}

/// The outputs ow in 0..<outWidth whose tap ow·stride + shift lies in 0..<width (a range: the tap
/// grows with ow).
@inline(__always)
func insideOutputs(stride: Int, shift: Int, width: Int, outWidth: Int) -> Range<Int> {
    let lo = shift >= 0 ? 0 : (-shift + stride - 1) / stride
    let last = width - 1 - shift   // the largest ow·stride inside
    let hi = last < 0 ? 0 : min(outWidth, last / stride + 1)
    return min(lo, hi)..<hi
}

/// One patch row of one sample for a stride-1 "same" convolution (KW = 2·padding + 1, so an
/// output row is as wide as an input row): the valid output rows read one contiguous run of the
/// input plane, shifted by the tap's offset, except `|shift|` elements per row that fall outside
/// the image. One long copy (or add) plus a fix-up of those border elements replaces a short loop
/// per row (the reference CNN's rows are 14 and 28 wide; im2col was 10% of its step).
struct SameSpan {
    let width: Int, plane: Int, shift: Int
    let rows: Range<Int>       // output rows whose input row lies inside the image
    let source: Int            // input index (within the plane) of output element rows.lowerBound·width

    init?(_ g: ConvGeometry, kh: Int, kw: Int) {
        guard g.stride == 1, g.outWidth == g.width, g.outHeight == g.height else { return nil }
        let rowOffset = kh - g.padding
        width = g.width; plane = g.height * g.width; shift = kw - g.padding
        rows = max(0, -rowOffset)..<max(max(0, -rowOffset), min(g.height, g.height - rowOffset))
        source = (rows.lowerBound + rowOffset) * g.width + shift
    }

    /// Elements [lo, hi) of the run read inside the plane (only the run's first or last element
    /// can fall outside it, and that element is a border element).
    var inPlane: (lo: Int, hi: Int) {
        let count = rows.count * width, lo = min(count, max(0, -source))
        return (lo, max(lo, min(count, plane - source)))
    }

    /// dst (the sample's HO·WO block of a patch row) ← the shifted input, zero outside the image.
    func copy(from src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>) {
        let start = rows.lowerBound * width, count = rows.count * width
        dst.update(repeating: 0, count: start)
        dst.advanced(by: start + count).update(repeating: 0, count: plane - start - count)
        let (lo, hi) = inPlane
        let run = dst + start
        run.update(repeating: 0, count: lo)
        (run + lo).update(from: src + source + lo, count: hi - lo)
        (run + hi).update(repeating: 0, count: count - hi)
        zeroBorders(run)
    }

    /// dx (the sample's input plane) += the patch row's block, for taps inside the image. The
    /// block's border elements are zeroed first and then added (x + 0 = x: dx starts at +0 and a
    /// sum of +0 and anything is never −0, so the bits are those of skipping them).
    func accumulate(from src: UnsafeMutablePointer<Float>, into dx: UnsafeMutablePointer<Float>) {
        let run = src + rows.lowerBound * width
        zeroBorders(run)
        let (lo, hi) = inPlane
        Vector.add(run + lo, dx + source + lo, hi - lo)
    }

    /// Zeroes, in each valid row of a run, the |shift| elements whose input column is outside.
    func zeroBorders(_ run: UnsafeMutablePointer<Float>) {
        guard shift != 0 else { return }
        let k = min(abs(shift), width), first = shift > 0 ? width - k : 0
        for r in 0..<rows.count { (run + r * width + first).update(repeating: 0, count: k) }
    }
}
