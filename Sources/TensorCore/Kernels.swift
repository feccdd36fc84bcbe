// Elementwise and per-channel kernels on raw float pointers.

/// y[i] += alpha * x[i]
@inline(__always)
public func axpy(_ n: Int, _ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    for i in 0..<n { y[i] += alpha * x[i] }
}

/// Adds column sums of a (rows, cols) matrix into out[cols].
@inline(__always)
public func addColumnSums(_ a: UnsafePointer<Float>, rows: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let row = a + r * cols
        for c in 0..<cols { out[c] += row[c] }
    }
}

/// Permutes (A, B, K) to (B, A, K): used to move between (Cout, N, HW) GEMM output and NCHW.
public func swapLeadingAxes(_ src: UnsafePointer<Float>, _ a: Int, _ b: Int, _ k: Int,
                            into dst: UnsafeMutablePointer<Float>) {
    for i in 0..<a {
        for j in 0..<b {
            let s = src + (i * b + j) * k, d = dst + (j * a + i) * k
            for e in 0..<k { d[e] = s[e] }
        }
    }
}

/// Index of the largest element of each row of a (rows, cols) matrix.
public func argmaxRows(_ a: UnsafePointer<Float>, rows: Int, cols: Int) -> [Int] {
    var out = [Int](repeating: 0, count: rows)
    for r in 0..<rows {
        let row = a + r * cols
        var best = 0
        for c in 1..<max(cols, 1) where row[c] > row[best] { best = c }
        out[r] = best
    }
    return out
}
