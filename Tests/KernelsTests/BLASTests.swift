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

    func testSgemmAndDgemmAllTransposesWithPaddedLeadingDimensions() {
        var rng = SeededRandom(seed: 1)
        let M = 7, N = 5, K = 9
        for tA in [false, true] {
            for tB in [false, true] {
                let lda = (tA ? M : K) + 3, ldb = (tB ? K : N) + 2, ldc = N + 1
                let a = rng.floats((tA ? K : M) * lda), b = rng.floats((tB ? N : K) * ldb)
                let c = rng.floats(M * ldc)
                let expected = naive(tA, tB, M: M, N: N, K: K, alpha: 0.5, a: a.doubles, lda: lda,
                                     b: b.doubles, ldb: ldb, beta: -2, c: c.doubles, ldc: ldc)
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
}
