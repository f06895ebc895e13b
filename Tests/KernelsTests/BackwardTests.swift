// Every backward kernel checked twice (STYLE: "check gradients twice"):
//  1. its naive Double reference against central finite differences of the Double forward
//     reference (relative error < 1e-6), and against torch autograd (float64) on the same inputs;
//  2. the fast Float kernel against torch autograd (fixture: scripts/reference/gradients_reference.py,
//     Tests/Fixtures/backward/kernels.safetensors).
import Foundation
import Kernels
import TestSupport
import XCTest

/// Central differences of f along every coordinate of x.
func numericGradient(_ x: [Double], h: Double = 1e-5, _ f: ([Double]) -> Double) -> [Double] {
    var x = x
    return (0..<x.count).map { i in
        let keep = x[i]
        x[i] = keep + h
        let up = f(x)
        x[i] = keep - h
        let down = f(x)
        x[i] = keep
        return (up - down) / (2 * h)
    }
}

/// max |a − e| / max |e|.
func relativeError(_ a: [Double], _ e: [Double]) -> Double {
    precondition(a.count == e.count)
    let scale = e.map(abs).max() ?? 0
    return zip(a, e).map { abs($0 - $1) }.max().map { $0 / max(scale, 1e-300) } ?? 0
}

func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

final class FiniteDifferenceTests: XCTestCase {
    var random = SeededRandom(seed: 77)
    func values(_ n: Int, scale: Float = 1) -> [Double] { random.floats(n, scale: scale).doubles }

    func testRMSNorm() {
        let T = 3, C = 7, eps = 1e-5
        let x = values(T * C, scale: 2), w = values(C).map { 1 + 0.3 * $0 }, dout = values(T * C)
        let (dx, dw) = rmsNormBackwardReference(dout: dout, x: x, weight: w, eps: eps, T: T, C: C)
        let loss = { (x: [Double], w: [Double]) in dot(dout, rmsNormReference(x: x, weight: w, eps: eps, T: T, C: C)) }
        XCTAssertLessThan(relativeError(dx, numericGradient(x) { loss($0, w) }), 1e-6)
        XCTAssertLessThan(relativeError(dw, numericGradient(w) { loss(x, $0) }), 1e-6)
    }

    func testRotary() {
        let T = 4, H = 2, D = 8
        let inv = rotaryInverseFrequencies(headDim: D, theta: 10_000, scaling: nil)
        let x = values(T * H * D), dout = values(T * H * D)
        let dx = rotaryBackwardReference(dy: dout, T: T, H: H, D: D, inverseFrequencies: inv, start: 5)
        let numeric = numericGradient(x) {
            dot(dout, rotaryReference(x: $0, T: T, H: H, D: D, inverseFrequencies: inv, start: 5))
        }
        XCTAssertLessThan(relativeError(dx, numeric), 1e-6)
    }

    func testGroupedQueryAttention() {
        let T = 6, H = 4, Hkv = 2, D = 4
        let q = values(T * H * D), k = values(T * Hkv * D), v = values(T * Hkv * D), dout = values(T * H * D)
        let g = causalAttentionBackwardReference(dout: dout, q: q, k: k, v: v, T: T, H: H, Hkv: Hkv, D: D)
        func loss(_ q: [Double], _ k: [Double], _ v: [Double]) -> Double {
            dot(dout, causalAttentionReference(q: q, k: k, v: v, T: T, H: H, Hkv: Hkv, D: D))
        }
        XCTAssertLessThan(relativeError(g.dq, numericGradient(q) { loss($0, k, v) }), 1e-6)
        XCTAssertLessThan(relativeError(g.dk, numericGradient(k) { loss(q, $0, v) }), 1e-6)
        XCTAssertLessThan(relativeError(g.dv, numericGradient(v) { loss(q, k, $0) }), 1e-6)
    }

    func testSwiGLU() {
        let n = 40
        let gate = values(n, scale: 6), up = values(n), dout = values(n)
        let (dg, du) = swigluBackwardReference(dout: dout, gate: gate, up: up)
        XCTAssertLessThan(relativeError(dg, numericGradient(gate) { dot(dout, swigluReference(gate: $0, up: up)) }), 1e-6)
        XCTAssertLessThan(relativeError(du, numericGradient(up) { dot(dout, swigluReference(gate: gate, up: $0)) }), 1e-6)
    }

    func testCrossEntropy() {
        let T = 4, V = 9
        let logits = values(T * V, scale: 3)
        let targets: [Int32] = [3, -1, 0, 8]
        let scale = 1.0 / 3
        let d = crossEntropyBackwardReference(logits: logits, targets: targets, T: T, V: V, scale: scale)
        let numeric = numericGradient(logits) { l in
            let nll = crossEntropyReference(logits: l, targets: targets.map { max($0, 0) }, T: T, V: V)
            return scale * zip(nll, targets).filter { $0.1 >= 0 }.reduce(0) { $0 + $1.0 }
        }
        XCTAssertLessThan(relativeError(d, numeric), 1e-6)
    }
}

final class BackwardKernelTests: XCTestCase {
    let f = try! FixtureFile("kernels", folder: "backward")

    func testRMSNormBackward() throws {
        for i in 0..<2 {
            let p = "rmsnorm.\(i)."
            let x = try f.floats(p + "x"), w = try f.floats(p + "weight"), dout = try f.floats(p + "dout")
            let eps = try f.doubles(p + "eps")[0]
            let (T, C) = (try f.shape(p + "x")[0], w.count)
            var out = [Float](repeating: 0, count: T * C), rstd = [Float](repeating: 0, count: T)
            rmsNorm(x: x, weight: w, eps: Float(eps), out: &out, T: T, C: C, rstd: &rstd)
            var dx = [Float](repeating: 0, count: T * C), dw = [Float](repeating: 0, count: C)
            rmsNormBackward(dout: dout, x: x, weight: w, rstd: rstd, dx: &dx, dweight: &dw, T: T, C: C)
            assertAllClose(dx, try f.doubles(p + "dx"), atol: 1e-5, rtol: 1e-5, p + "dx")
            assertAllClose(dw, try f.doubles(p + "dweight"), atol: 1e-5, rtol: 1e-5, p + "dweight")
            let ref = rmsNormBackwardReference(dout: dout.doubles, x: x.doubles, weight: w.doubles, eps: eps, T: T, C: C)
            assertAllClose(ref.dx, try f.doubles(p + "dx"), atol: 1e-12, rtol: 1e-10, p + "reference dx")
            assertAllClose(ref.dweight, try f.doubles(p + "dweight"), atol: 1e-12, rtol: 1e-10, p + "reference dweight")
        }
    }

    func testRotaryBackward() throws {
        for name in ["default", "start", "llama3"] {
            let p = "rope.\(name)."
            let shape = try f.shape(p + "x")
            let (T, H, D) = (shape[0], shape[1], shape[2])
            let start = try f.ints(p + "start")[0], theta = try f.doubles(p + "theta")[0]
            let scaling = name == "llama3"
                ? Llama3RopeScaling(factor: try f.doubles(p + "factor")[0], lowFreqFactor: try f.doubles(p + "low_freq_factor")[0],
                                    highFreqFactor: try f.doubles(p + "high_freq_factor")[0],
                                    originalMaxPositionEmbeddings: Int(try f.doubles(p + "original_max_position_embeddings")[0]))
                : nil
            let table = RotaryTable(headDim: D, theta: theta, scaling: scaling, maxPositions: start + T)
            var dx = try f.floats(p + "dout")
            table.applyBackward(&dx, T: T, H: H, start: start)
            assertAllClose(dx, try f.doubles(p + "dx"), atol: 1e-6, rtol: 1e-5, p + "dx")
            let ref = rotaryBackwardReference(dy: try f.doubles(p + "dout"), T: T, H: H, D: D,
                                              inverseFrequencies: table.inverseFrequencies, start: start)
            // torch rounds cos and sin to float32; the reference keeps them in Double.
            assertAllClose(ref, try f.doubles(p + "dx"), atol: 3e-7, rtol: 0, p + "reference dx")
        }
    }

    /// The fast backward (its lse from the fast forward) on one case, at the given thread count.
    func attentionGradients(_ p: String, threads: Int) throws -> (dq: [Float], dk: [Float], dv: [Float]) {
        let qs = try f.shape(p + "q"), ks = try f.shape(p + "k")
        let (T, H, D, Hkv) = (qs[0], qs[1], qs[2], ks[1])
        let widths = (try? f.ints(p + "widths"))
        let q = try f.floats(p + "q"), k = try f.floats(p + "k"), v = try f.floats(p + "v"), dout = try f.floats(p + "dout")
        let saved = BLAS.threads
        BLAS.setThreads(threads)
        defer { BLAS.setThreads(saved) }
        var out = [Float](repeating: 0, count: dout.count), lse = [Float](repeating: 0, count: T * H)
        causalAttention(q: q, k: k, v: v, out: &out, T: T, H: H, Hkv: Hkv, D: D, valueWidths: widths, logSumExp: &lse)
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count)
        var dv = [Float](repeating: 0, count: v.count)
        causalAttentionBackward(dout: dout, q: q, k: k, v: v, lse: lse, dq: &dq, dk: &dk, dv: &dv,
                                T: T, H: H, Hkv: Hkv, D: D, valueWidths: widths)
        return (dq, dk, dv)
    }

    func testAttentionBackward() throws {
        for name in ["gqa37", "gqa200", "mha20", "narrow"] {
            let p = "attn.\(name)."
            let mine = try attentionGradients(p, threads: 2)
            assertAllClose(mine.dq, try f.doubles(p + "dq"), atol: 2e-5, rtol: 1e-4, p + "dq")
            assertAllClose(mine.dk, try f.doubles(p + "dk"), atol: 2e-5, rtol: 1e-4, p + "dk")
            assertAllClose(mine.dv, try f.doubles(p + "dv"), atol: 2e-5, rtol: 1e-4, p + "dv")
            let one = try attentionGradients(p, threads: 1)
            assertAllClose(one.dk, mine.dk, atol: 1e-6, rtol: 1e-5, p + "dk, 1 thread")
            let again = try attentionGradients(p, threads: 2)
            XCTAssertEqual(again.dk, mine.dk, "\(p) same thread count, same bits")
            XCTAssertEqual(again.dv, mine.dv, "\(p) same thread count, same bits")
            if name != "narrow" {
                let qs = try f.shape(p + "q"), ks = try f.shape(p + "k")
                let ref = causalAttentionBackwardReference(
                    dout: try f.doubles(p + "dout"), q: try f.doubles(p + "q"), k: try f.doubles(p + "k"),
                    v: try f.doubles(p + "v"), T: qs[0], H: qs[1], Hkv: ks[1], D: qs[2])
                assertAllClose(ref.dq, try f.doubles(p + "dq"), atol: 1e-12, rtol: 1e-9, p + "reference dq")
                assertAllClose(ref.dk, try f.doubles(p + "dk"), atol: 1e-12, rtol: 1e-9, p + "reference dk")
                assertAllClose(ref.dv, try f.doubles(p + "dv"), atol: 1e-12, rtol: 1e-9, p + "reference dv")
            }
        }
    }

    func testSwiGLUBackward() throws {
        let gate = try f.floats("swiglu.gate"), up = try f.floats("swiglu.up"), dout = try f.floats("swiglu.dout")
        var dg = [Float](repeating: 0, count: gate.count), du = dg
        swigluBackward(dout: dout, gate: gate, up: up, dgate: &dg, dup: &du, count: gate.count)
        assertAllClose(dg, try f.doubles("swiglu.dgate"), atol: 1e-6, rtol: 1e-5, "dgate")
        assertAllClose(du, try f.doubles("swiglu.dup"), atol: 1e-6, rtol: 1e-5, "dup")
    }

    func testLinearBackward() throws {
        let x = try f.floats("linear.x"), w = try f.floats("linear.weight"), dout = try f.floats("linear.dout")
        let (T, C, F) = (try f.shape("linear.x")[0], try f.shape("linear.x")[1], try f.shape("linear.weight")[0])
        var dx = [Float](repeating: 0, count: T * C), dw = [Float](repeating: 0, count: F * C)
        var db = [Float](repeating: 0, count: F)
        BLAS.linearBackward(dy: dout, x: x, w: w, dx: &dx, dw: &dw, T: T, C: C, F: F)
        addBiasBackward(dy: dout, dbias: &db, T: T, F: F)
        assertAllClose(dx, try f.doubles("linear.dx"), atol: 1e-5, rtol: 1e-5, "dx")
        assertAllClose(dw, try f.doubles("linear.dweight"), atol: 1e-5, rtol: 1e-5, "dweight")
        assertAllClose(db, try f.doubles("linear.dbias"), atol: 1e-5, rtol: 1e-5, "dbias")
    }

    func testCrossEntropyThroughTheHead() throws {
        let normed = try f.floats("xent.normed"), w = try f.floats("xent.w")
        let targets = try f.ints("xent.targets").map { Int32($0) }
        let (T, C, V) = (targets.count, try f.shape("xent.normed")[1], try f.shape("xent.w")[0])
        let counted = targets.filter { $0 >= 0 }.count
        var logits = [Float](repeating: 0, count: T * V)
        BLAS.linear(x: normed, w: w, y: &logits, T: T, C: C, F: V)
        let sum = crossEntropyBackward(logits: &logits, targets: targets, T: T, V: V, scale: 1 / Float(counted))
        XCTAssertEqual(sum / Double(counted), try f.doubles("xent.loss")[0], accuracy: 1e-5)
        var dn = [Float](repeating: 0, count: T * C), dw = [Float](repeating: 0, count: V * C)
        BLAS.linearBackward(dy: logits, x: normed, w: w, dx: &dn, dw: &dw, T: T, C: C, F: V)
        assertAllClose(dn, try f.doubles("xent.dnormed"), atol: 1e-6, rtol: 1e-5, "dnormed")
        assertAllClose(dw, try f.doubles("xent.dw"), atol: 1e-6, rtol: 1e-5, "dw")
    }
}
