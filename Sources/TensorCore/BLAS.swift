// Matrix products through OpenBLAS's cblas_sgemm (row-major).
import CBLAS
import CKernels

/// C[M×N] = alpha · op(A) · op(B) + beta · C, all row-major with leading dimensions given.
@inline(__always)
public func gemm(transA: Bool = false, transB: Bool = false,
                 m: Int, n: Int, k: Int,
                 alpha: Float = 1,
                 a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int,
                 beta: Float = 0,
                 c: UnsafeMutablePointer<Float>, ldc: Int) {
    if m == 0 || n == 0 { return }
    if k == 0 {
        // op(A)·op(B) is the zero matrix; C = beta · C.
        for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
        return
    }
    cblas_sgemm(CblasRowMajor,
                transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha,
                a, Int32(max(lda, 1)), b, Int32(max(ldb, 1)), beta, c, Int32(max(ldc, 1)))
    lockstep_clear_upper_state()   // AVX-512 kernels return with the upper state dirty (CKernels.h)
}

/// The number of threads OpenBLAS uses (set with OPENBLAS_NUM_THREADS).
public func blasThreadCount() -> Int { Int(openblas_get_num_threads()) }
public func setBLASThreadCount(_ n: Int) { openblas_set_num_threads(Int32(n)) }
/// The kernel family OpenBLAS chose for this CPU (e.g. "Haswell", "SkylakeX", "Zen").
public func blasCoreName() -> String { String(cString: openblas_get_corename()) }
/// OpenBLAS's description of itself and of the kernel it chose (e.g. "Haswell").
public func blasConfiguration() -> String {
    let cfg = String(cString: openblas_get_config())
    let core = String(cString: openblas_get_corename())
    return "\(cfg) core=\(core)"
}

/// The instruction-set level of Lockstep's own C kernels on this CPU ("avx512f", "avx2" or
/// "baseline"; LOCKSTEP_KERNEL_LEVEL=avx2 caps it, to measure a CPU without AVX-512).
public func kernelLevelName() -> String { String(cString: lockstep_kernel_level_name(lockstep_kernel_level())) }
