// Winograd F(2,3) and F(4,3): forward, input gradient and weight gradient against a float64
// direct convolution within the stated error bounds, over several geometries; and every
// instruction-set level of the transforms bit for bit against the baseline.
import CKernels
import TensorCore
import TestSupport
import XCTest

/// One geometry: in/out channels, height, width, padding.
struct WinogradCase { let c, k, h, w, pad: Int }

/// The geometries every check runs: the CNN's and ResNet's shapes (scaled down in channels),
/// non-square planes, planes that tiles do not divide, channel counts that are not a multiple of
/// any vector width, and padding 0 and 2.
let winogradCases = [
    WinogradCase(c: 32, k: 16, h: 14, w: 14, pad: 1), WinogradCase(c: 24, k: 24, h: 28, w: 28, pad: 1),
    WinogradCase(c: 19, k: 17, h: 7, w: 7, pad: 1), WinogradCase(c: 5, k: 7, h: 9, w: 11, pad: 2),
    WinogradCase(c: 3, k: 9, h: 6, w: 5, pad: 0), WinogradCase(c: 1, k: 2, h: 3, w: 4, pad: 1),
]

/// The error bound, per output element, relative to Σ|w|·|x| over its terms: a float direct
/// convolution's rounding is within γ_{9C} of that (≈ 9C·2⁻²⁴); Winograd adds the transforms'
/// roundings, amplified by their coefficients (F(4,3)'s Bᵀ has row sums up to 10 and Aᵀ up to 18,
/// F(2,3)'s are 2 and 3). Measured maxima over these geometries (forward / input gradient /
/// weight gradient): F(2,3) 4.3e-7 / 1.6e-7 / 1.0e-7, F(4,3) 2.2e-6 / 2.7e-6 / 7.0e-7, against
/// 1-2e-7 for a float direct convolution. The bounds are 3.5× the largest measured for each
/// tile, and 10⁵× below the error of a single wrong transform coefficient (O(1)).
let winogradBound: [Int: Double] = [2: 1.5e-6, 4: 1e-5]

/// y[n][o][i][j] = Σ w[o][c][a][b]·x[n][c][i−pad+a][j−pad+b] and Σ|terms|, in float64.
func directConvolution(_ x: [Float], _ w: [Float], n: Int, _ g: WinogradCase) -> (y: [Double], scale: [Double]) {
    let ho = g.h + 2 * g.pad - 2, wo = g.w + 2 * g.pad - 2
    var y = [Double](repeating: 0, count: n * g.k * ho * wo), scale = y
    for s in 0..<n {
        for o in 0..<g.k {
            for i in 0..<ho {
                for j in 0..<wo {
                    var sum = 0.0, abs = 0.0
                    for c in 0..<g.c {
                        for a in 0..<3 {
                            for b in 0..<3 {
                                let ii = i - g.pad + a, jj = j - g.pad + b
                                guard ii >= 0, ii < g.h, jj >= 0, jj < g.w else { continue }
                                let t = Double(w[((o * g.c + c) * 3 + a) * 3 + b]) * Double(x[((s * g.c + c) * g.h + ii) * g.w + jj])
                                sum += t
                                abs += Swift.abs(t)
                            }
                        }
                    }
                    let at = ((s * g.k + o) * ho + i) * wo + j
                    y[at] = sum
                    scale[at] = abs
                }
            }
        }
    }
    return (y, scale)
}

func floats(_ count: Int, seed: UInt64) -> [Float] { Array(randomTensor([count], seed: seed).array) }

/// The largest |got − want| / scale (scale floored at the smallest nonzero one, for outputs whose
/// every term is zero).
func relativeError(_ got: [Float], _ want: [Double], _ scale: [Double]) -> Double {
    let floor = scale.filter { $0 > 0 }.min() ?? 1
    return zip(got, zip(want, scale)).map { abs(Double($0) - $1.0) / max($1.1, floor) }.max() ?? 0
}

final class WinogradTests: XCTestCase {
    func testForwardIsWithinTheBoundOfAFloat64DirectConvolution() {
        for tile in [2, 4] {
            for (index, g) in winogradCases.enumerated() {
                let n = 3, seed = UInt64(10 * index + tile)
                let x = floats(n * g.c * g.h * g.w, seed: seed), w = floats(g.k * g.c * 9, seed: seed + 100)
                let conv = WinogradConvolution(tile: tile, inChannels: g.c, outChannels: g.k, height: g.h, width: g.w, padding: g.pad)
                var y = [Float](repeating: .nan, count: n * g.k * conv.outHeight * conv.outWidth)
                w.withUnsafeBufferPointer { conv.setWeights($0.baseAddress!) }
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { conv.apply(xp.baseAddress!, samples: n, into: $0.baseAddress!) } }
                let (want, scale) = directConvolution(x, w, n: n, g)
                let error = relativeError(y, want, scale)
                XCTAssertLessThanOrEqual(error, winogradBound[tile]!, "F(\(tile),3) forward, \(g)")
            }
        }
    }

    func testInputGradientIsWithinTheBoundOfAFloat64Reference() {
        // dX[c][h][w] = Σ_o Σ_taps w[o][c][a][b]·dY[o][h+pad−a][w+pad−b]: the forward reference
        // applied to the flipped, transposed weights with padding 2 − pad.
        for tile in [2, 4] {
            for (index, g) in winogradCases.enumerated() {
                let n = 2, seed = UInt64(20 * index + tile)
                let ho = g.h + 2 * g.pad - 2, wo = g.w + 2 * g.pad - 2
                let dy = floats(n * g.k * ho * wo, seed: seed), w = floats(g.k * g.c * 9, seed: seed + 100)
                var flipped = [Float](repeating: 0, count: w.count)   // (c, k, 3, 3), rotated
                for o in 0..<g.k { for c in 0..<g.c { for t in 0..<9 { flipped[(c * g.k + o) * 9 + 8 - t] = w[(o * g.c + c) * 9 + t] } } }
                let back = WinogradCase(c: g.k, k: g.c, h: ho, w: wo, pad: 2 - g.pad)
                let conv = WinogradConvolution(tile: tile, inChannels: g.k, outChannels: g.c, height: ho, width: wo, padding: 2 - g.pad)
                XCTAssertEqual(conv.outHeight, g.h)
                var dx = [Float](repeating: .nan, count: n * g.c * g.h * g.w)
                w.withUnsafeBufferPointer { conv.setWeights($0.baseAddress!, flipped: true) }
                dy.withUnsafeBufferPointer { p in dx.withUnsafeMutableBufferPointer { conv.apply(p.baseAddress!, samples: n, into: $0.baseAddress!) } }
                let (want, scale) = directConvolution(dy, flipped, n: n, back)
                XCTAssertLessThanOrEqual(relativeError(dx, want, scale), winogradBound[tile]!, "F(\(tile),3) input gradient, \(g)")
            }
        }
    }

    func testWeightGradientIsWithinTheBoundOfAFloat64Reference() {
        for tile in [2, 4] {
            for (index, g) in winogradCases.enumerated() {
                let n = 5, seed = UInt64(30 * index + tile)
                let ho = g.h + 2 * g.pad - 2, wo = g.w + 2 * g.pad - 2
                let x = floats(n * g.c * g.h * g.w, seed: seed), dy = floats(n * g.k * ho * wo, seed: seed + 1)
                let start = floats(g.k * g.c * 9, seed: seed + 2)   // dw is added to, not overwritten
                let conv = WinogradConvolution(tile: tile, inChannels: g.c, outChannels: g.k, height: g.h, width: g.w, padding: g.pad)
                var dw = start
                let inSize = g.c * g.h * g.w, outSize = g.k * ho * wo
                x.withUnsafeBufferPointer { xp in
                    dy.withUnsafeBufferPointer { dp in
                        // Two pieces (3 + 2 samples), as a chunk split into pieces sums them.
                        conv.accumulateWeightGradient(xp.baseAddress!, dp.baseAddress!, samples: 3, accumulate: false)
                        conv.accumulateWeightGradient(xp.baseAddress! + 3 * inSize, dp.baseAddress! + 3 * outSize, samples: 2, accumulate: true)
                    }
                }
                dw.withUnsafeMutableBufferPointer { conv.addWeightGradient(into: $0.baseAddress!) }
                var want = [Double](repeating: 0, count: dw.count), scale = want
                for s in 0..<n {
                    for o in 0..<g.k {
                        for c in 0..<g.c {
                            for a in 0..<3 {
                                for b in 0..<3 {
                                    var sum = 0.0, abs = 0.0
                                    for i in 0..<ho {
                                        for j in 0..<wo {
                                            let ii = i - g.pad + a, jj = j - g.pad + b
                                            guard ii >= 0, ii < g.h, jj >= 0, jj < g.w else { continue }
                                            let t = Double(dy[((s * g.k + o) * ho + i) * wo + j]) * Double(x[((s * g.c + c) * g.h + ii) * g.w + jj])
                                            sum += t
                                            abs += Swift.abs(t)
                                        }
                                    }
                                    want[((o * g.c + c) * 3 + a) * 3 + b] += sum
                                    scale[((o * g.c + c) * 3 + a) * 3 + b] += abs
                                }
                            }
                        }
                    }
                }
                let got = zip(dw, start).map { $0 - $1 }   // exact enough: start's rounding is in the bound below
                var error = 0.0
                for i in 0..<got.count {
                    let e: Double = abs(Double(got[i]) - want[i]) / (scale[i] + abs(Double(start[i])))
                    error = max(error, e)
                }
                XCTAssertLessThanOrEqual(error, winogradBound[tile]!, "F(\(tile),3) weight gradient, \(g)")
            }
        }
    }

    func testEveryLevelOfTheTransformsGivesTheBaselineBits() {
        let levels = (0...2).filter { lockstep_kernel_level_supported(Int32($0)) != 0 }
        for tile in [2, 4] {
            for g in winogradCases {
                let th = (g.h + 2 * g.pad - 2 + tile - 1) / tile, tw = (g.w + 2 * g.pad - 2 + tile - 1) / tile
                let hp = th * tile + 2, wp = tw * tile + 2, a2 = (tile + 2) * (tile + 2)
                let x = floats(g.c * g.h * g.w, seed: 7), m = floats(a2 * max(th * tw, g.c) * g.k, seed: 8)
                var results: [[Float]] = []
                for level in levels {
                    let l = Int32(level)
                    var p = [Float](repeating: .nan, count: hp * wp * g.c)
                    var v = [Float](repeating: .nan, count: a2 * th * tw * g.c)
                    var q = [Float](repeating: .nan, count: th * tile * tw * tile * g.k)
                    var y = [Float](repeating: .nan, count: g.k * g.h * g.w)
                    var d = [Float](repeating: .nan, count: a2 * th * tw * g.k)
                    lockstep_winograd_pack(l, x, g.c, g.h, g.w, g.pad, hp, wp, &p)
                    lockstep_winograd_input(l, Int32(tile), p, wp, g.c, th, tw, &v, th * tw * g.c)
                    lockstep_winograd_output(l, Int32(tile), m, th * tw * g.k, g.k, th, tw, &q, tw * tile)
                    lockstep_winograd_unpack(l, q, tw * tile, g.k, min(g.h, th * tile), min(g.w, tw * tile), &y)
                    lockstep_winograd_gradient_tiles(l, Int32(tile), q, tw * tile, g.k, th, tw, &d, th * tw * g.k)
                    let w = floats(g.k * g.c * 9, seed: 9)
                    var u = [Float](repeating: .nan, count: a2 * g.k * g.c), uf = u
                    lockstep_winograd_weights(l, Int32(tile), w, g.k, g.c, 0, &u)
                    lockstep_winograd_weights(l, Int32(tile), w, g.k, g.c, 1, &uf)
                    var dw = w
                    lockstep_winograd_weight_gradient(l, Int32(tile), m, g.k, g.c, &dw)
                    results.append(p + v + q + y + d + u + uf + dw)
                }
                for (level, r) in zip(levels, results) {
                    XCTAssertEqual(r.map(\.bitPattern), results[0].map(\.bitPattern), "level \(level), F(\(tile),3), \(g)")
                }
            }
        }
    }
}
