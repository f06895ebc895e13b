// Thin row-major wrappers over OpenBLAS (cblas), and the thread count shared by every kernel.
//
// Dimensions: T tokens (rows), C input features, F output features; M, N, K as in BLAS.
//   linear:  x: [T, C]; w: [F, C] (PyTorch nn.Linear weight layout); y: [T, F]
//   sgemm:   c: [M, N] = alpha · op(a)[M, K] · op(b)[K, N] + beta · c
//
// Threads: every parallel region is ours (`WorkerPool`), and OpenBLAS runs single-threaded inside
// it. A product is split into blocks of whole rows of c (or, when c has few rows, whole columns)
// that the workers compute with single-threaded calls. OpenBLAS's own threads are used only for
// LAPACK (`withLibraryThreads`): after each call they spin on sched_yield for a long while (its
// THREAD_TIMEOUT, read once from the environment when the library loads), and beside our own
// workers that spinning cost 15% of a forward pass at T = 2048 on 2 cores.
import _COpenBLAS
import Foundation

public enum BLAS {
    /// The degree of parallelism of the kernels in this module. It starts at the machine's core
    /// count; `OPENBLAS_NUM_THREADS` is deliberately overridden so that one setting governs all.
    nonisolated(unsafe) private static var current: Int = {
        openblas_set_num_threads(1)
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Sets the number of threads (≥ 1) of the products and the elementwise kernels. Results of
    /// every kernel here are deterministic for a given thread count.
    public static func setThreads(_ n: Int) {
        precondition(n >= 1, "thread count must be at least 1, got \(n)")
        _ = current
        current = n
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
        if T == 1 {
            linearsOneRow(x: x, K: C, [RowMap(w: w, y: y, N: F)], accumulate: accumulate)
            return
        }
        sgemm(transA: false, transB: true, M: T, N: F, K: C, alpha: 1, a: x, lda: C, b: w, ldb: C,
              beta: accumulate ? 1 : 0, c: y, ldc: F)
    }

    /// The backward of `linear` (y = x·wᵀ), accumulating:
    ///   dx[T, C] += dy[T, F] · w[F, C];   dw[F, C] += dy[T, F]ᵀ · x[T, C]
    /// Either output may be nil (an input that needs no gradient).
    public static func linearBackward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, w: UnsafePointer<Float>,
                                      dx: UnsafeMutablePointer<Float>?, dw: UnsafeMutablePointer<Float>?,
                                      T: Int, C: Int, F: Int) {
        precondition(T >= 0 && C >= 0 && F >= 0, "negative size in linearBackward: T \(T) C \(C) F \(F)")
        if T == 0 || C == 0 || F == 0 { return }
        if let dx {
            sgemm(transA: false, transB: false, M: T, N: C, K: F, alpha: 1, a: dy, lda: F, b: w, ldb: C,
                  beta: 1, c: dx, ldc: C)
        }
        if let dw {
            sgemm(transA: true, transB: false, M: F, N: C, K: T, alpha: 1, a: dy, lda: F, b: x, ldb: C,
                  beta: 1, c: dw, ldc: C)
        }
    }

    /// Row-major c[M, N] = alpha · op(a) · op(b) + beta · c, op(a) = aᵀ when transA (a stored
    /// [K, M]) else a ([M, K]); likewise b. With beta == 0, c's old contents (even NaN) are ignored.
    public static func sgemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                             a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if M == 1 && N > 0 && K > 0 {
            // One row (decoding): a matrix–vector product reads b once; sgemm would first copy
            // (pack) all of it.
            _ = current
            splitProduct(M: 1, N: N, K: K) { _, columns in
                let j0 = columns.lowerBound
                cblas_sgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans,
                            Int32(transB ? columns.count : K), Int32(transB ? K : columns.count), alpha,
                            b + (transB ? j0 * ldb : j0), Int32(ldb), a, Int32(transA ? lda : 1), beta, c + j0, 1)
            }
            return
        }
        product(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                beta: beta, c: c, ldc: ldc)
    }

    /// The same as `sgemm` in Double.
    public static func dgemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Double,
                             a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                             beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        product(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                beta: beta, c: c, ldc: ldc)
    }

    /// sgemm and dgemm: empty sizes, then the product cut among the workers.
    private static func product<S: GemmScalar>(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: S,
                                               a: UnsafePointer<S>, lda: Int, b: UnsafePointer<S>, ldb: Int,
                                               beta: S, c: UnsafeMutablePointer<S>, ldc: Int) {
        _ = current  // make sure the thread count was applied before the first call
        if M == 0 || N == 0 { return }
        if K == 0 {
            scaleRows(c, M: M, N: N, ldc: ldc, beta: beta)
            return
        }
        splitProduct(M: M, N: N, K: K) { rows, columns in
            let (ao, bo, co) = blockOffsets(rows, columns, transA: transA, transB: transB, lda: lda, ldb: ldb, ldc: ldc)
            S.gemm(transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                   Int32(rows.count), Int32(columns.count), Int32(K), alpha, a + ao, Int32(lda), b + bo, Int32(ldb),
                   beta, c + co, Int32(ldc))
        }
    }

    /// The upper triangle of c[n, n] += xᵀx for x[k, n] (row-major): a Gram matrix accumulated
    /// in float64 (dsyrk). Only the upper triangle (j ≥ i) is written.
    public static func gramAccumulate(x: UnsafePointer<Double>, rows k: Int, width n: Int,
                                      into c: UnsafeMutablePointer<Double>) {
        _ = current
        if k == 0 || n == 0 { return }
        // Column blocks j0..<j1 of equal work (∝ j1² − j0²): the rectangle above the block
        // (rows 0..<j0, a dgemm) and the block's own upper triangle (dsyrk).
        let parts = isSplitting || current == 1 || n * n * k < 2 * splitThreshold ? 1 : max(1, min(current, n / 16))
        let bounds = (0...parts).map { Int((Double(n) * (Double($0) / Double(parts)).squareRoot()).rounded()) }
        parallelBlocks(parts) { p in
            let j0 = bounds[p], j1 = bounds[p + 1]
            if j1 <= j0 { return }
            if j0 > 0 {
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(j0), Int32(j1 - j0), Int32(k), 1.0,
                            x, Int32(n), x + j0, Int32(n), 1.0, c + j0, Int32(n))
            }
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(j1 - j0), Int32(k), 1.0, x + j0, Int32(n), 1.0,
                        c + j0 * n + j0, Int32(n))
        }
    }

    /// c = beta · c for an empty inner dimension (BLAS would reject K == 0 with lda < 1).
    private static func scaleRows<S: BinaryFloatingPoint>(_ c: UnsafeMutablePointer<S>, M: Int,
                                                          N: Int, ldc: Int, beta: S) {
        for i in 0..<M {
            for j in 0..<N { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] }
        }
    }

    /// Products below this many multiply-adds run on the calling thread; a matrix–vector product
    /// (one row), bound by memory rather than arithmetic, is split from a smaller size.
    static let splitThreshold = 1 << 20
    static let vectorSplitThreshold = 1 << 16
    /// Blocks are whole multiples of this many rows or columns, so that OpenBLAS's kernels see
    /// the same edges whichever way a product is cut.
    static let splitUnit = 64

    /// Cuts c[M, N] into at most `threads` blocks of whole rows (or whole columns when there are
    /// fewer than two units of rows) and runs `body(rows, columns)` for each concurrently; a small
    /// product, or one asked for inside a parallel region, is one block on the calling thread.
    static func splitProduct(M: Int, N: Int, K: Int, _ body: (Range<Int>, Range<Int>) -> Void) {
        let n = current, unit = splitUnit
        guard n > 1, !isSplitting, M * N * K >= (M == 1 ? vectorSplitThreshold : splitThreshold),
              max(M, N) >= 2 * unit else {
            body(0..<M, 0..<N)
            return
        }
        let byRows = M >= 2 * unit
        let length = byRows ? M : N
        let parts = min(n, length / unit)
        let bounds = (0...parts).map { $0 == parts ? length : length * $0 / parts / unit * unit }
        parallelBlocks(parts) { p in
            let range = bounds[p]..<bounds[p + 1]
            if byRows { body(range, 0..<N) } else { body(0..<M, range) }
        }
    }

    /// Where a block rows × columns of c starts in a (op(a) = a or aᵀ), b and c, row-major.
    static func blockOffsets(_ rows: Range<Int>, _ columns: Range<Int>, transA: Bool, transB: Bool, lda: Int, ldb: Int,
                             ldc: Int) -> (Int, Int, Int) {
        (transA ? rows.lowerBound : rows.lowerBound * lda, transB ? columns.lowerBound * ldb : columns.lowerBound,
         rows.lowerBound * ldc + columns.lowerBound)
    }

    /// Runs blocks 0..<count concurrently on our workers (`WorkerPool`), marked as inside a
    /// parallel region; inside one already, or with one thread, they run in turn on this thread.
    /// Which thread runs a block varies from call to call: a block's result must not depend on it.
    public static func parallelBlocks(_ count: Int, _ body: (Int) -> Void) {
        if count <= 1 || isSplitting || current == 1 {
            for i in 0..<count { inParallelRegion { body(i) } }
            return
        }
        let workers = pool()
        inParallelRegion { workers.run(count, body) }
    }

    /// The pool of threads − 1 workers, made when first needed and again when the count changes.
    private static func pool() -> WorkerPool {
        poolLock.lock()
        defer { poolLock.unlock() }
        if let p = currentPool, p.workerCount == current - 1 { return p }
        currentPool?.shutDown()
        let p = WorkerPool(workers: current - 1)
        currentPool = p
        return p
    }

    nonisolated(unsafe) private static var currentPool: WorkerPool?
    private static let poolLock = NSLock()

    /// Marks a pool worker as inside a parallel region for its whole life.
    static func markWorkerThread() { pthread_setspecific(regionKey, UnsafeRawPointer(bitPattern: 1)) }

    /// Whether the calling thread is inside one of our parallel regions (where a product is not
    /// split again).
    static var isSplitting: Bool { pthread_getspecific(regionKey) != nil }

    /// Runs `body` marked as inside a parallel region.
    static func inParallelRegion<R>(_ body: () throws -> R) rethrows -> R {
        let outer = pthread_getspecific(regionKey)
        pthread_setspecific(regionKey, UnsafeRawPointer(bitPattern: 1))
        defer { pthread_setspecific(regionKey, outer) }
        return try body()
    }

    private static let regionKey: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    /// Runs `body` (a LAPACK call) with OpenBLAS's own threads at the thread count.
    static func withLibraryThreads<R>(_ body: () throws -> R) rethrows -> R {
        let n = current
        if n == 1 || isSplitting { return try body() }
        openblas_set_num_threads(Int32(n))
        defer { openblas_set_num_threads(1) }
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
    BLAS.parallelBlocks(chunks) { i in body((count * i / chunks)..<(count * (i + 1) / chunks)) }
}

/// Float and Double, for the one product code: their row-major cblas gemm.
protocol GemmScalar: BinaryFloatingPoint {
    static func gemm(_ transA: CBLAS_TRANSPOSE, _ transB: CBLAS_TRANSPOSE, _ M: Int32, _ N: Int32, _ K: Int32,
                     _ alpha: Self, _ a: UnsafePointer<Self>, _ lda: Int32, _ b: UnsafePointer<Self>, _ ldb: Int32,
                     _ beta: Self, _ c: UnsafeMutablePointer<Self>, _ ldc: Int32)
}

extension Float: GemmScalar {
    static func gemm(_ tA: CBLAS_TRANSPOSE, _ tB: CBLAS_TRANSPOSE, _ M: Int32, _ N: Int32, _ K: Int32, _ alpha: Float,
                     _ a: UnsafePointer<Float>, _ lda: Int32, _ b: UnsafePointer<Float>, _ ldb: Int32, _ beta: Float,
                     _ c: UnsafeMutablePointer<Float>, _ ldc: Int32) {
        cblas_sgemm(CblasRowMajor, tA, tB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc)
    }
}

extension Double: GemmScalar {
    static func gemm(_ tA: CBLAS_TRANSPOSE, _ tB: CBLAS_TRANSPOSE, _ M: Int32, _ N: Int32, _ K: Int32, _ alpha: Double,
                     _ a: UnsafePointer<Double>, _ lda: Int32, _ b: UnsafePointer<Double>, _ ldb: Int32, _ beta: Double,
                     _ c: UnsafeMutablePointer<Double>, _ ldc: Int32) {
        cblas_dgemm(CblasRowMajor, tA, tB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc)
    }
}

