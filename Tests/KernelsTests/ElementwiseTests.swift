import Foundation
@testable import Kernels
import TestSupport
import XCTest

final class FastMathTests: XCTestCase {
    func testExpFloatWithinTwoUlps() {
        var x: [Float] = stride(from: -86.89, through: 88.72, by: 0.01).map { Float($0) }
        x += [0, -0, 1e-8, -1e-8, 0.5, -0.5, 88.722, -86.899, 88.3762626647949, 88.37627]
        var y = [Float](repeating: 0, count: x.count)
        expFloats(x, &y, count: x.count)
        for (xi, yi) in zip(x, y) {
            let e = Float(Foundation.exp(Double(xi)))
            XCTAssertLessThanOrEqual(abs(yi - e), 2 * e.ulp, "exp(\(xi)) = \(yi), expected \(e)")
        }
    }

    func testExpFloatSpecialValues() {
        let x: [Float] = [.infinity, -.infinity, .nan, 89, 1000, -87, -1000, 0]
        var y = [Float](repeating: 7, count: x.count)
        expFloats(x, &y, count: x.count)
        XCTAssertEqual(y[0], .infinity)
        XCTAssertEqual(y[1], 0)
        XCTAssertTrue(y[2].isNaN)
        XCTAssertEqual(y[3], .infinity)
        XCTAssertEqual(y[4], .infinity)
        XCTAssertEqual(y[5], 0)  // flushed: torch's 1.6e-38 is invisible to every caller
        XCTAssertEqual(y[6], 0)
        XCTAssertEqual(y[7], 1)
    }

    func testExpDoubleWithinTwoUlps() {
        let x: [Double] = stride(from: -700.0, through: 700.0, by: 0.137).map { $0 }
            + [0, 1e-300, -1e-12, 0.34657359, -0.34657359]
        var y = [Double](repeating: 0, count: x.count)
        expDoubles(x, &y, count: x.count)
        for (xi, yi) in zip(x, y) {
            let e = Foundation.exp(xi)
            XCTAssertLessThanOrEqual(abs(yi - e), 2 * e.ulp, "exp(\(xi)) = \(yi), expected \(e)")
        }
        var s = [Double](repeating: 1, count: 4)
        expDoubles([-800, .infinity, .nan, -.infinity], &s, count: 4)
        XCTAssertEqual(s[0], 0)
        XCTAssertEqual(s[1], .infinity)
        XCTAssertTrue(s[2].isNaN)
        XCTAssertEqual(s[3], 0)
    }
}

final class NormTests: XCTestCase {
    func testRMSNormMatchesTransformers() throws {
        let f = try FixtureFile("rmsnorm")
        for i in 0..<2 {
            let s = try f.shape("\(i).x"), T = s[0], C = s[1]
            let x = try f.floats("\(i).x"), w = try f.floats("\(i).weight")
            let eps = try f.doubles("\(i).eps")[0]
            var out = [Float](repeating: .nan, count: T * C)
            rmsNorm(x: x, weight: w, eps: Float(eps), out: &out, T: T, C: C)
            assertAllClose(out, try f.doubles("\(i).expected64"), atol: 1e-6, rtol: 1e-6)
            assertAllClose(out, try f.floats("\(i).expected32"), atol: 1e-6, rtol: 1e-6)
        }
    }

    func testRMSNormMatchesReferenceAtOddSizesAndInPlace() {
        var rng = SeededRandom(seed: 3)
        for (T, C) in [(1, 1), (2, 7), (3, 31), (5, 33), (70, 576), (1, 1000)] {
            let x = rng.floats(T * C, scale: 3), w = rng.floats(C)
            let expected = rmsNormReference(x: x.doubles, weight: w.doubles, eps: 1e-5, T: T, C: C)
            var out = [Float](repeating: 0, count: T * C)
            rmsNorm(x: x, weight: w, eps: 1e-5, out: &out, T: T, C: C)
            assertAllClose(out, expected, atol: 1e-6, rtol: 1e-5, "T \(T) C \(C)")
            var inPlace = x
            inPlace.withUnsafeMutableBufferPointer { p in
                rmsNorm(x: p.baseAddress!, weight: w, eps: 1e-5, out: p.baseAddress!, T: T, C: C)
            }
            XCTAssertEqual(inPlace, out)
        }
    }
}

final class ActivationTests: XCTestCase {
    func testSwiGLUMatchesTorch() throws {
        let f = try FixtureFile("swiglu")
        let g = try f.floats("gate"), u = try f.floats("up")
        var out = [Float](repeating: .nan, count: g.count)
        swiglu(gate: g, up: u, out: &out, count: g.count)
        assertAllClose(out, try f.doubles("expected64"), atol: 1e-7, rtol: 2e-7)
        assertAllClose(out, try f.floats("expected32"), atol: 1e-7, rtol: 2e-7)
    }

    func testSwiGLUMatchesReferenceAtOddCountsAndAliased() {
        var rng = SeededRandom(seed: 4)
        for n in [1, 7, 8, 9, 100, 200_003] {
            let g = rng.floats(n, scale: 12), u = rng.floats(n)
            var out = [Float](repeating: 0, count: n)
            swiglu(gate: g, up: u, out: &out, count: n)
            assertAllClose(out, swigluReference(gate: g.doubles, up: u.doubles), atol: 1e-7,
                           rtol: 2e-7, "count \(n)")
            var aliased = g
            aliased.withUnsafeMutableBufferPointer { p in
                swiglu(gate: p.baseAddress!, up: u, out: p.baseAddress!, count: n)
            }
            XCTAssertEqual(aliased, out)
        }
    }

    func testAddBiasAndResidual() {
        var rng = SeededRandom(seed: 5)
        for (T, F) in [(1, 1), (3, 5), (300, 301)] {
            let y0 = rng.floats(T * F), b = rng.floats(F), x = rng.floats(T * F)
            var y = y0
            addBias(&y, bias: b, T: T, F: F)
            XCTAssertEqual(y, (0..<(T * F)).map { y0[$0] + b[$0 % F] })
            var r = y0
            add(&r, x, count: T * F)
            XCTAssertEqual(r, zip(y0, x).map { $0 + $1 })
        }
    }
}

final class CrossEntropyTests: XCTestCase {
    func testCrossEntropyMatchesTorch() throws {
        let f = try FixtureFile("xent")
        let s = try f.shape("logits"), T = s[0], V = s[1]
        let targets = try f.ints("targets").map { Int32($0) }
        let nll = crossEntropy(logits: try f.floats("logits"), targets: targets, T: T, V: V)
        assertAllClose(nll, try f.doubles("expected64"), atol: 1e-12, rtol: 1e-12)
        assertAllClose(nll, try f.floats("expected32"), atol: 2e-6, rtol: 1e-6)
    }

    func testCrossEntropyMatchesReferenceAtOddSizes() {
        var rng = SeededRandom(seed: 6)
        for (T, V) in [(1, 1), (2, 3), (5, 13), (3, 1001), (40, 4099)] {
            let logits = rng.floats(T * V, scale: 20)
            let targets = (0..<T).map { Int32(($0 * 7 + 3) % V) }
            let nll = crossEntropy(logits: logits, targets: targets, T: T, V: V)
            assertAllClose(nll, crossEntropyReference(logits: logits.doubles, targets: targets, T: T,
                                                      V: V), atol: 1e-12, rtol: 1e-12, "T \(T) V \(V)")
        }
    }
}
