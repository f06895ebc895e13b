// Thin row-major wrappers over OpenBLAS (cblas), and the thread count shared by every kernel.
//
// Dimensions: T tokens (rows), C input features, F output features; M, N, K as in BLAS.
//   linear:  x: [T, C]; w: [F, C] (PyTorch nn.Linear weight layout); y: [T, F]
//   sgemm:   c: [M, N] = alpha · op(a)[M, K] · op(b)[K, N] + beta · c
import _COpenBLAS
import Foundation

public enum BLAS {
    /// The degree of parallelism of OpenBLAS and of the kernels in this module. It starts at the
    /// machine's core count; `OPENBLAS_NUM_THREADS` is deliberately overridden so that one
    /// setting governs both.
    nonisolated(unsafe) private static var current: Int = {
        let n = max(1, ProcessInfo.processInfo.activeProcessorCount)
        openblas_set_num_threads(Int32(n))
        return n
    }()

    /// Sets the number of threads (≥ 1) of OpenBLAS and of the elementwise kernels. Results of
    /// every kernel here are deterministic for a given thread count.
    public static func setThreads(_ n: Int) {
        precondition(n >= 1, "thread count must be at least 1, got \(n)")
        current = n
        openblas_set_num_threads(Int32(n))
    }

    public static var threads: Int { current }

    /// y[T, F] (+)= x[T, C] · w[F, C]ᵀ — an nn.Linear without bias. With C == 0 the product is
    /// empty: y is zeroed (or left alone when accumulating).
    public static func linear(x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                              y: UnsafeMutablePointer<Float>, T: Int, C: Int, F: Int,
                              accumulate: Bool = false) {
        precondition(T >= 0 && C >= 0 && F >= 0, "negative size in linear: T \(T) C \(C) F \(F)")
        if T == 0 || F == 0 { return }
        if C == 0 {
            if !accumulate { y.update(repeating: 0, count: T * F) }
            return
        }
        sgemm(transA: false, transB: true, M: T, N: F, K: C, alpha: 1, a: x, lda: C, b: w, ldb: C,
              beta: accumulate ? 1 : 0, c: y, ldc: F)
    }

    /// Row-major c[M, N] = alpha · op(a) · op(b) + beta · c, op(a) = aᵀ when transA (a stored
    /// [K, M]) else a ([M, K]); likewise b. With beta == 0, c's old contents (even NaN) are ignored.
    public static func sgemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        _ = current  // make sure the thread count was applied before the first call
        if M == 0 || N == 0 { return }
        if K == 0 {
            scaleRows(c, M: M, N: N, ldc: ldc, beta: beta)
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans, Int32(M), Int32(N), Int32(K), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// The same as `sgemm` in Double.
    public static func dgemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Double,
                             a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                             beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        _ = current
        if M == 0 || N == 0 { return }
        if K == 0 {
            scaleRows(c, M: M, N: N, ldc: ldc, beta: beta)
            return
        }
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans, Int32(M), Int32(N), Int32(K), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// The upper triangle of c[n, n] += xᵀx for x[k, n] (row-major): a Gram matrix accumulated
    /// in float64 (dsyrk). Only the upper triangle (j ≥ i) is written.
    public static func gramAccumulate(x: UnsafePointer<Double>, rows k: Int, width n: Int,
                                      into c: UnsafeMutablePointer<Double>) {
        _ = current
        if k == 0 || n == 0 { return }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(k), 1.0, x, Int32(n), 1.0,
                    c, Int32(n))
    }

    /// c = beta · c for an empty inner dimension (BLAS would reject K == 0 with lda < 1).
    private static func scaleRows<S: BinaryFloatingPoint>(_ c: UnsafeMutablePointer<S>, M: Int,
                                                          N: Int, ldc: Int, beta: S) {
        for i in 0..<M {
            for j in 0..<N { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] }
        }
    }

    /// Runs `body` with OpenBLAS single-threaded, so that several of our own threads may each
    /// call sgemm at once (OpenBLAS 0.3.21 has no per-call thread setting).
    static func singleThreaded<R>(_ body: () throws -> R) rethrows -> R {
        let n = current
        if n == 1 { return try body() }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(n)) }
        return try body()
    }
}

/// Splits 0..<count into at most `BLAS.threads` contiguous chunks of at least `grain` items and
/// runs them concurrently. Callers only use it where each item's result does not depend on the
/// chunking, so results are the same for every thread count.
func parallelChunks(_ count: Int, grain: Int, _ body: (Range<Int>) -> Void) {
    let chunks = min(BLAS.threads, max(1, count / max(grain, 1)))
    if chunks <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: chunks) { i in
        body((count * i / chunks)..<(count * (i + 1) / chunks))
    }
}
