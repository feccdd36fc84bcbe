// Vectorised loops (SIMD8) for the hot elementwise paths. Swift does not reassociate float
// additions, so reductions written as plain loops stay scalar; these use eight lanes and
// several accumulators explicitly.

import CKernels

public typealias F8 = SIMD8<Float>

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> F8 {
    UnsafeRawPointer(p).loadUnaligned(as: F8.self)
}
@inline(__always) func store8(_ v: F8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: F8.self)
}

public enum Vector {
    /// Σ x[i]
    @inline(__always)
    public static func sum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var a = F8(), b = F8()
        var i = 0
        while i + 16 <= n { a += load8(x + i); b += load8(x + i + 8); i += 16 }
        if i + 8 <= n { a += load8(x + i); i += 8 }
        var s = (a + b).sum()
        while i < n { s += x[i]; i += 1 }
        return s
    }

    /// Σ (x[i] − c)²
    @inline(__always)
    public static func sumSquaredDeviations(_ x: UnsafePointer<Float>, _ n: Int, from c: Float) -> Float {
        var a = F8(), b = F8()
        let cv = F8(repeating: c)
        var i = 0
        while i + 16 <= n {
            let d0 = load8(x + i) - cv, d1 = load8(x + i + 8) - cv
            a += d0 * d0; b += d1 * d1; i += 16
        }
        if i + 8 <= n { let d = load8(x + i) - cv; a += d * d; i += 8 }
        var s = (a + b).sum()
        while i < n { let d = x[i] - c; s += d * d; i += 1 }
        return s
    }

    /// (Σ g[i], Σ g[i]·h[i])
    @inline(__always)
    public static func sumAndDot(_ g: UnsafePointer<Float>, _ h: UnsafePointer<Float>, _ n: Int) -> (Float, Float) {
        var a = F8(), b = F8()
        var i = 0
        while i + 8 <= n {
            let gv = load8(g + i)
            a += gv; b += gv * load8(h + i); i += 8
        }
        var s = a.sum(), d = b.sum()
        while i < n { s += g[i]; d += g[i] * h[i]; i += 1 }
        return (s, d)
    }

    /// y[i] = x[i]·scale + shift
    @inline(__always)
    public static func affine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, scale: Float, shift: Float) {
        let sv = F8(repeating: scale), tv = F8(repeating: shift)
        var i = 0
        while i + 8 <= n { store8(load8(x + i) * sv + tv, y + i); i += 8 }
        while i < n { y[i] = x[i] * scale + shift; i += 1 }
    }

    /// xh[i] = (x[i] − mean)·inv; y[i] = γ·xh[i] + β
    @inline(__always)
    public static func normalize(_ x: UnsafePointer<Float>, _ xh: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                 _ n: Int, mean: Float, inv: Float, gamma: Float, beta: Float) {
        let mv = F8(repeating: mean), iv = F8(repeating: inv), gv = F8(repeating: gamma), bv = F8(repeating: beta)
        var i = 0
        while i + 8 <= n {
            let v = (load8(x + i) - mv) * iv
            store8(v, xh + i); store8(gv * v + bv, y + i); i += 8
        }
        while i < n { let v = (x[i] - mean) * inv; xh[i] = v; y[i] = gamma * v + beta; i += 1 }
    }

    /// y[i] = x[i] < 0 ? 0 : x[i] (−0 and NaN pass, in the vector body and the tail alike)
    @inline(__always)
    public static func relu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        let z = F8()
        var i = 0
        while i + 8 <= n {
            let v = load8(x + i)
            store8(v.replacing(with: z, where: v .< z), y + i); i += 8
        }
        while i < n { y[i] = x[i] < 0 ? 0 : x[i]; i += 1 }
    }

    /// d[i] = y[i] > 0 ? g[i] : 0
    @inline(__always)
    public static func reluBackward(_ y: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, _ n: Int) {
        let z = F8()
        var i = 0
        while i + 8 <= n {
            let mask = load8(y + i) .> z
            store8(z.replacing(with: load8(g + i), where: mask), d + i); i += 8
        }
        while i < n { d[i] = y[i] > 0 ? g[i] : 0; i += 1 }
    }

    /// y[i] += x[i]
    @inline(__always)
    public static func add(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store8(load8(y + i) + load8(x + i), y + i); i += 8 }
        while i < n { y[i] += x[i]; i += 1 }
    }

    /// y[i] += c
    @inline(__always)
    public static func addScalar(_ c: Float, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        let cv = F8(repeating: c)
        var i = 0
        while i + 8 <= n { store8(load8(y + i) + cv, y + i); i += 8 }
        while i < n { y[i] += c; i += 1 }
    }

    /// y[i] = x[i]·m[i]
    @inline(__always)
    public static func multiply(_ x: UnsafePointer<Float>, _ m: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store8(load8(x + i) * load8(m + i), y + i); i += 8 }
        while i < n { y[i] = x[i] * m[i]; i += 1 }
    }
}

extension Vector {
    /// One Adam update over n elements (see Optimizers.Adam for the formulation):
    /// g' = g + l2·w; m = b1·m + (1−b1)·g'; v = b2·v + (1−b2)·g'²; w = w·shrink − stepSize·m / (√(v·invC2) + eps).
    @inline(__always)
    public static func adamStep(w: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
                                v: UnsafeMutablePointer<Float>, n: Int, beta1 b1: Float, beta2 b2: Float, epsilon eps: Float,
                                l2: Float, shrink: Float, stepSize: Float, invC2: Float) {
        lockstep_adam_step(-1, w, g, m, v, n, b1, b2, eps, l2, shrink, stepSize, invC2)
    }

    /// dst[0..<n] = src[0..<n] with streaming stores, which keep the copy out of the caches (a
    /// checkpoint's image); `streamFence` makes them visible before the memory is handed on.
    public static func streamCopy(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ n: Int) {
        lockstep_stream_copy(-1, dst, src, n)
    }
    public static func streamFence() { lockstep_stream_fence() }

    /// One SGD-with-momentum update over n elements: g' = g + λw; v = μv + g'; w −= η·(nesterov ? g' + μv : v).
    @inline(__always)
    public static func sgdMomentumStep(w: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>, v: UnsafeMutablePointer<Float>,
                                       n: Int, rate: Float, momentum mu: Float, decay lambda: Float, nesterov: Bool) {
        let rv = F8(repeating: rate), muv = F8(repeating: mu), lv = F8(repeating: lambda)
        var i = 0
        while i + 8 <= n {
            let wv = load8(w + i)
            let grad = load8(g + i) + lv * wv
            let vel = muv * load8(v + i) + grad
            store8(vel, v + i)
            store8(wv - rv * (nesterov ? grad + muv * vel : vel), w + i)
            i += 8
        }
        while i < n {
            let grad = g[i] + lambda * w[i]
            v[i] = mu * v[i] + grad
            w[i] -= rate * (nesterov ? grad + mu * v[i] : v[i])
            i += 1
        }
    }
}
