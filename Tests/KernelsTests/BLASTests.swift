import Kernels
import TestSupport
import XCTest

final class BLASTests: XCTestCase {
    /// Naive c = alpha·op(a)·op(b) + beta·c in Double, with leading dimensions.
    func naive(_ tA: Bool, _ tB: Bool, M: Int, N: Int, K: Int, alpha: Double, a: [Double], lda: Int,
               b: [Double], ldb: Int, beta: Double, c: [Double], ldc: Int) -> [Double] {
        var out = c
        for i in 0..<M {
            for j in 0..<N {
                var s = 0.0
                for p in 0..<K {
                    s += (tA ? a[p * lda + i] : a[i * lda + p]) * (tB ? b[j * ldb + p] : b[p * ldb + j])
                }
                out[i * ldc + j] = alpha * s + beta * c[i * ldc + j]
            }
        }
        return out
    }

    /// Operands of c = 0.5·op(a)·op(b) − 2·c with padded leading dimensions, and the naive result.
    struct Operands {
        var lda: Int, ldb: Int, ldc: Int
        var a: [Float], b: [Float], c: [Float]
        var expected: [Double]
    }

    func operands(_ tA: Bool, _ tB: Bool, M: Int, N: Int, K: Int, _ rng: inout SeededRandom) -> Operands {
        let lda = (tA ? M : K) + 3, ldb = (tB ? K : N) + 2, ldc = N + 1
        let a = rng.floats((tA ? K : M) * lda), b = rng.floats((tB ? N : K) * ldb), c = rng.floats(M * ldc)
        return Operands(lda: lda, ldb: ldb, ldc: ldc, a: a, b: b, c: c,
                        expected: naive(tA, tB, M: M, N: N, K: K, alpha: 0.5, a: a.doubles, lda: lda, b: b.doubles,
                                        ldb: ldb, beta: -2, c: c.doubles, ldc: ldc))
    }

    func testSgemmAndDgemmAllTransposesWithPaddedLeadingDimensions() {
        var rng = SeededRandom(seed: 1)
        let M = 7, N = 5, K = 9
        for tA in [false, true] {
            for tB in [false, true] {
                let o = operands(tA, tB, M: M, N: N, K: K, &rng)
                let (lda, ldb, ldc, a, b, c, expected) = (o.lda, o.ldb, o.ldc, o.a, o.b, o.c, o.expected)
                var cs = c
                BLAS.sgemm(transA: tA, transB: tB, M: M, N: N, K: K, alpha: 0.5, a: a, lda: lda,
                           b: b, ldb: ldb, beta: -2, c: &cs, ldc: ldc)
                assertAllClose(cs, expected, atol: 1e-5, rtol: 1e-5, "sgemm \(tA) \(tB)")
                var cd = c.doubles
                BLAS.dgemm(transA: tA, transB: tB, M: M, N: N, K: K, alpha: 0.5, a: a.doubles,
                           lda: lda, b: b.doubles, ldb: ldb, beta: -2, c: &cd, ldc: ldc)
                assertAllClose(cd, expected, atol: 1e-13, rtol: 1e-13, "dgemm \(tA) \(tB)")
            }
        }
    }

    func testLinearMatchesNaiveAndAccumulates() {
        var rng = SeededRandom(seed: 2)
        for (T, C, F) in [(1, 1, 1), (3, 17, 5), (33, 64, 70)] {
            let x = rng.floats(T * C), w = rng.floats(F * C), y0 = rng.floats(T * F)
            let product = naive(false, true, M: T, N: F, K: C, alpha: 1, a: x.doubles, lda: C,
                                b: w.doubles, ldb: C, beta: 0, c: [Double](repeating: 0, count: T * F),
                                ldc: F)
            var y = [Float](repeating: .nan, count: T * F)  // beta 0 must ignore old contents
            BLAS.linear(x: x, w: w, y: &y, T: T, C: C, F: F)
            assertAllClose(y, product, atol: 1e-5, rtol: 1e-5)
            var ya = y0
            BLAS.linear(x: x, w: w, y: &ya, T: T, C: C, F: F, accumulate: true)
            assertAllClose(ya, zip(product, y0).map { $0 + Double($1) }, atol: 1e-5, rtol: 1e-5)
        }
    }

    func testEmptyInnerDimensionZeroesOrKeeps() {
        var y: [Float] = [1, 2, 3, 4]
        BLAS.linear(x: [Float](), w: [Float](), y: &y, T: 2, C: 0, F: 2, accumulate: true)
        XCTAssertEqual(y, [1, 2, 3, 4])
        BLAS.linear(x: [Float](), w: [Float](), y: &y, T: 2, C: 0, F: 2)
        XCTAssertEqual(y, [0, 0, 0, 0])
        var c: [Float] = [1, 2]
        BLAS.sgemm(transA: false, transB: false, M: 1, N: 2, K: 0, alpha: 1, a: [Float](), lda: 1,
                   b: [Float](), ldb: 2, beta: 3, c: &c, ldc: 2)
        XCTAssertEqual(c, [3, 6])
    }

    func testSetThreads() {
        let before = BLAS.threads
        XCTAssertGreaterThanOrEqual(before, 1)
        BLAS.setThreads(1)
        XCTAssertEqual(BLAS.threads, 1)
        BLAS.setThreads(before)
        XCTAssertEqual(BLAS.threads, before)
    }

    /// Runs `body` with 1 and with 2 threads and returns both results.
    func withOneAndTwoThreads<R>(_ body: () -> R) -> (R, R) {
        let before = BLAS.threads
        defer { BLAS.setThreads(before) }
        BLAS.setThreads(1)
        let one = body()
        BLAS.setThreads(2)
        return (one, body())
    }

    /// Products large enough to be cut among the workers (by rows; by columns when there are few
    /// rows; one row through the matrix–vector path) equal the naive product; cut by rows they
    /// equal the one-thread result bit for bit (OpenBLAS's kernels treat the edge columns of a
    /// small product differently, so a cut by columns may move the last bits: it is repeatable).
    func testSplitProductsEqualOneThreadAndNaive() {
        var rng = SeededRandom(seed: 3)
        for (M, N, K) in [(300, 130, 100), (5, 400, 600), (1, 300, 700)] {
            for tA in [false, true] {
                for tB in [false, true] {
                    let o = operands(tA, tB, M: M, N: N, K: K, &rng)
                    let (lda, ldb, ldc, a, b, c, expected) = (o.lda, o.ldb, o.ldc, o.a, o.b, o.c, o.expected)
                    let product = { () -> ([Float], [Double]) in
                        var cs = c, cd = c.doubles
                        BLAS.sgemm(transA: tA, transB: tB, M: M, N: N, K: K, alpha: 0.5, a: a, lda: lda,
                                   b: b, ldb: ldb, beta: -2, c: &cs, ldc: ldc)
                        BLAS.dgemm(transA: tA, transB: tB, M: M, N: N, K: K, alpha: 0.5, a: a.doubles,
                                   lda: lda, b: b.doubles, ldb: ldb, beta: -2, c: &cd, ldc: ldc)
                        return (cs, cd)
                    }
                    let (one, two) = withOneAndTwoThreads(product)
                    let name = "M \(M) N \(N) K \(K) \(tA) \(tB)"
                    assertAllClose(two.0, expected, atol: 1e-4, rtol: 1e-4, "sgemm " + name)
                    assertAllClose(two.1, expected, atol: 1e-11, rtol: 1e-11, "dgemm " + name)
                    if M >= 128 {
                        XCTAssertEqual(one.0, two.0, "sgemm threads " + name)
                        XCTAssertEqual(one.1, two.1, "dgemm threads " + name)
                    } else {
                        let again = withOneAndTwoThreads(product).1
                        XCTAssertEqual(again.0, two.0, "sgemm repeated " + name)
                        XCTAssertEqual(again.1, two.1, "dgemm repeated " + name)
                    }
                }
            }
        }
    }

    /// The Gram matrix cut into column blocks: the upper triangle is xᵀx added to c, the strict
    /// lower triangle is left as it was, and two threads give the one-thread bits.
    func testGramAccumulateSplitWritesTheUpperTriangle() {
        var rng = SeededRandom(seed: 4)
        let k = 300, n = 100
        let x = rng.floats(k * n).doubles, c0 = rng.floats(n * n).doubles
        let (one, two) = withOneAndTwoThreads { () -> [Double] in
            var c = c0
            BLAS.gramAccumulate(x: x, rows: k, width: n, into: &c)
            return c
        }
        XCTAssertEqual(one, two)
        for i in 0..<n {
            for j in 0..<n {
                if j < i {
                    XCTAssertEqual(two[i * n + j], c0[i * n + j], "lower (\(i), \(j)) written")
                } else {
                    let dot = (0..<k).reduce(0.0) { $0 + x[$1 * n + i] * x[$1 * n + j] }
                    XCTAssertEqual(two[i * n + j], c0[i * n + j] + dot, accuracy: 1e-10 * max(1, abs(dot)))
                }
            }
        }
    }

    /// Several maps of one row (decoding's q, k, v): each output equals the naive dot product,
    /// with tails that are not multiples of the kernel's 32 lanes or of the workers' 16-row units,
    /// accumulating or not, and the same bits with one and with two threads.
    func testLinearsOneRowMatchNaive() {
        var rng = SeededRandom(seed: 5)
        let K = 577, sizes = [70, 33, 129]
        let x = rng.floats(K), ws = sizes.map { rng.floats($0 * K) }, y0 = sizes.map { rng.floats($0) }
        for accumulate in [false, true] {
            let (one, two) = withOneAndTwoThreads { () -> [[Float]] in
                var ys = y0
                let outs = ys.indices.map { UnsafeMutablePointer<Float>.allocate(capacity: sizes[$0]) }
                defer { outs.forEach { $0.deallocate() } }
                for (i, out) in outs.enumerated() { out.initialize(from: y0[i], count: sizes[i]) }
                ws[0].withUnsafeBufferPointer { w0 in
                    ws[1].withUnsafeBufferPointer { w1 in
                        ws[2].withUnsafeBufferPointer { w2 in
                            let maps = zip([w0, w1, w2], outs).enumerated().map { i, p in
                                RowMap(w: p.0.baseAddress!, y: p.1, N: sizes[i])
                            }
                            BLAS.linearsOneRow(x: x, K: K, maps, accumulate: accumulate)
                        }
                    }
                }
                for i in ys.indices { ys[i] = Array(UnsafeBufferPointer(start: outs[i], count: sizes[i])) }
                return ys
            }
            XCTAssertEqual(one, two, "threads, accumulate \(accumulate)")
            for (i, N) in sizes.enumerated() {
                let expected = (0..<N).map { j in
                    (0..<K).reduce(0.0) { $0 + Double(ws[i][j * K + $1]) * Double(x[$1]) } + (accumulate ? Double(y0[i][j]) : 0)
                }
                assertAllClose(two[i], expected, atol: 1e-4, rtol: 1e-4, "map \(i), accumulate \(accumulate)")
            }
        }
    }
}

/// The core type chosen for OpenBLAS from the CPU's flags, as scripts/blas-env.sh chooses it.
final class BLASCoreTests: XCTestCase {
    func testCoreTypeFollowsTheNewestFlags() {
        func core(_ flags: String) -> String? { BLAS.coreType(cpuFlags: flags.split(separator: " ")) }
        XCTAssertEqual(core("fpu sse3 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16"), "Cooperlake")
        XCTAssertEqual(core("sse3 avx2 fma avx512f avx512dq avx512bw avx512vl"), "SkylakeX")
        XCTAssertEqual(core("sse3 avx2 fma avx512f"), "Haswell")  // AVX-512 F alone (Knights Landing): not SkylakeX
        XCTAssertEqual(core("sse3 avx avx2 fma"), "Haswell")
        XCTAssertNil(core("sse3 avx avx2"))  // no FMA
        XCTAssertNil(core("sse3 avx"))
        XCTAssertNil(core(""))
        XCTAssertNil(core("avx2fma avx512_bf16x"))  // whole flags only
    }
}
