import Foundation
import Pruning
import TestSupport
import XCTest

/// The compensation on synthetic least-squares problems with known answers.
final class RestorationTests: XCTestCase {
    struct Problem {
        var w: [Float]  // [out, inF]
        var bias: [Float]
        var x: [[Double]]  // tokens × inF
        var out: Int, inF: Int
        var n: Double { Double(x.count) }
        var sum: [Double] { (0..<inF).map { j in x.reduce(0) { $0 + $1[j] } } }
        var gram: [Double] {
            var g = [Double](repeating: 0, count: inF * inF)
            for row in x { for i in 0..<inF { for j in 0..<inF { g[i * inF + j] += row[i] * row[j] } } }
            return g
        }
    }

    func random(_ seed: UInt64, out: Int, inF: Int, tokens: Int, constant: [Int] = []) -> Problem {
        var state = seed
        func next() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 53) * 2 - 1
        }
        let w = (0..<(out * inF)).map { _ in Float(next()) }
        let bias = (0..<out).map { _ in Float(next()) }
        let levels = (0..<inF).map { _ in next() * 3 }
        let x = (0..<tokens).map { _ in (0..<inF).map { j in constant.contains(j) ? levels[j] : next() + 0.5 * levels[j] } }
        return Problem(w: w, bias: bias, x: x, out: out, inF: inF)
    }

    /// Outputs of W x + b and of W' x_K + b' on every token.
    func outputs(_ p: Problem, kept: [Int], _ r: RestoreResult) -> ([Double], [Double]) {
        var dense: [Double] = [], restored: [Double] = []
        for row in p.x {
            for i in 0..<p.out {
                dense.append((0..<p.inF).reduce(Double(p.bias[i])) { $0 + Double(p.w[i * p.inF + $1]) * row[$1] })
                restored.append(kept.enumerated().reduce(Double(r.bias?[i] ?? 0)) { $0 + Double(r.weight[i * kept.count + $1.offset]) * row[$1.element] })
            }
        }
        return (dense, restored)
    }

    func testBiasReproducesConstantDroppedInputsExactly() {
        let p = random(1, out: 5, inF: 8, tokens: 40, constant: [1, 4, 6])
        let kept = [0, 2, 3, 5, 7]
        let r = Restoration.restore(weight: p.w, out: p.out, inF: p.inF, kept: kept, bias: p.bias, count: p.n,
                                    sum: p.sum, gram: p.gram, method: .bias, damp: 0)
        let (dense, restored) = outputs(p, kept: kept, r)
        assertAllClose(restored, dense, atol: 1e-5, rtol: 1e-5)
        XCTAssertEqual(r.errorAfter ?? 1, 0, accuracy: 1e-6 * (r.errorBefore ?? 1))
        XCTAssertGreaterThan(r.errorBefore ?? 0, 1)
    }

    /// With no damping, lsq is the normal-equations optimum (solved here by Gaussian elimination),
    /// and bias+lsq the optimum with a constant column; both beat the plain slice.
    func testLeastSquaresReachTheClosedFormOptimum() {
        let p = random(2, out: 4, inF: 7, tokens: 300)
        let kept = [0, 1, 3, 6]
        for (method, withConstant) in [(RestoreMethod.lsq, false), (.biasLSQ, true)] {
            let r = Restoration.restore(weight: p.w, out: p.out, inF: p.inF, kept: kept, bias: p.bias, count: p.n,
                                        sum: p.sum, gram: p.gram, method: method, damp: 0)
            XCTAssertFalse(r.fellBack)
            // Design matrix Z = [x_K (, 1)], target y_i = W_i x (without b, which stays).
            let m = kept.count + (withConstant ? 1 : 0)
            for i in 0..<p.out {
                var a = [[Double]](repeating: [Double](repeating: 0, count: m + 1), count: m)
                for row in p.x {
                    let z = kept.map { row[$0] } + (withConstant ? [1] : [])
                    let y = (0..<p.inF).reduce(0.0) { $0 + Double(p.w[i * p.inF + $1]) * row[$1] }
                    for u in 0..<m {
                        for v in 0..<m { a[u][v] += z[u] * z[v] }
                        a[u][m] += z[u] * y
                    }
                }
                for col in 0..<m {  // Gauss-Jordan
                    let pivot = (col..<m).max { abs(a[$0][col]) < abs(a[$1][col]) }!
                    a.swapAt(col, pivot)
                    for r2 in 0..<m where r2 != col {
                        let f = a[r2][col] / a[col][col]
                        for c2 in col...m { a[r2][c2] -= f * a[col][c2] }
                    }
                }
                let solution = (0..<m).map { a[$0][m] / a[$0][$0] }
                let ours = (0..<kept.count).map { Double(r.weight[i * kept.count + $0]) }
                    + (withConstant ? [Double(r.bias![i] - p.bias[i])] : [])
                assertAllClose(ours, solution, atol: 1e-4, rtol: 1e-4, "\(method) row \(i)")
            }
            XCTAssertLessThan(r.errorAfter!, r.errorBefore!)
        }
    }

    /// The errors restore reports (from G, Σx and n) equal ‖WX + b − W'X_K − b'‖² summed over the
    /// tokens, computed directly, before and after, for every method (often with fewer tokens than
    /// inputs, where G is singular).
    func testReportedErrorsEqualTheDirectSum() {
        for seed in 3..<13 {
            let p = random(UInt64(seed), out: 3, inF: 9, tokens: 6 + seed % 5)
            let kept = Array(stride(from: seed % 3, to: 9, by: 2))
            for method in RestoreMethod.allCases {
                let r = Restoration.restore(weight: p.w, out: p.out, inF: p.inF, kept: kept, bias: p.bias, count: p.n,
                                            sum: p.sum, gram: p.gram, method: method, damp: 0.01)
                let (dense, restored) = outputs(p, kept: kept, r)
                let after = zip(dense, restored).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
                let plain = RestoreResult(weight: kept.isEmpty ? [] : (0..<p.out).flatMap { i in kept.map { p.w[i * p.inF + $0] } },
                                          bias: p.bias)
                let (_, sliced) = outputs(p, kept: kept, plain)
                let before = zip(dense, sliced).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
                XCTAssertEqual(r.errorAfter!, after, accuracy: 1e-6 * max(after, 1), "\(seed) \(method) after")
                XCTAssertEqual(r.errorBefore!, before, accuracy: 1e-6 * max(before, 1), "\(seed) \(method) before")
            }
        }
    }

    /// A fit worse than the plain slice (here: damping so strong that the refit weights shrink
    /// towards zero, while the dropped inputs are small) is not taken: the plain slice and the
    /// dense bias come back, marked.
    func testWorseFitFallsBackToThePlainSlice() {
        var p = random(7, out: 4, inF: 8, tokens: 50)
        let kept = [0, 2, 4, 6]
        p.x = p.x.map { row in row.enumerated().map { kept.contains($0.offset) ? $0.element : 0.01 * $0.element } }
        let r = Restoration.restore(weight: p.w, out: p.out, inF: p.inF, kept: kept, bias: p.bias, count: p.n,
                                    sum: p.sum, gram: p.gram, method: .lsq, damp: 1e4)
        XCTAssertTrue(r.fellBack)
        XCTAssertEqual(r.weight, (0..<p.out).flatMap { i in kept.map { p.w[i * p.inF + $0] } })
        XCTAssertEqual(r.bias, p.bias)
        XCTAssertEqual(r.errorAfter, r.errorBefore)
        let undamped = Restoration.restore(weight: p.w, out: p.out, inF: p.inF, kept: kept, bias: p.bias, count: p.n,
                                           sum: p.sum, gram: p.gram, method: .lsq, damp: 0)
        XCTAssertFalse(undamped.fellBack)
        XCTAssertLessThan(undamped.errorAfter!, undamped.errorBefore!)
    }
}
