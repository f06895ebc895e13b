import Foundation
import Kernels

// Compensation of a consumer (o_proj, down_proj) for the input columns slicing dropped
// (`restore`), from the statistics of that input over the calibration windows:
//   bias      (FLAP): W' = W[:, K], b' = b + W[:, dropped]·mean(x[dropped])
//   lsq       (FASP): W' = W·G[:, K]·(G[K, K] + λI)⁻¹, b' = b
//   bias+lsq        : the least-squares fit with a constant input appended: [W', c] =
//                     W·[G[:, K], s]·([[G[K,K], s_K], [s_Kᵀ, n]] + λI_K)⁻¹, b' = b + c
// with G = XᵀX, s = Σx, n the token count and λ = damp × mean diagonal of G[K, K].

public enum RestoreMethod: String, CaseIterable, Sendable {
    case bias, lsq
    case biasLSQ = "bias+lsq"

    public var needsGram: Bool { self != .bias }
}

public struct RestoreResult {
    /// [out, k] row-major.
    public var weight: [Float]
    public var bias: [Float]?
    /// ‖WX + b − W'X_K − b'‖² over the calibration tokens, without and with the compensation
    /// (nil without a Gram matrix).
    public var errorBefore: Double?
    public var errorAfter: Double?
    /// The solve failed or made the error larger: the plain slice was kept.
    public var fellBack = false
}

public enum Restoration {
    /// - Parameters: w: the dense consumer [out, inF]; kept: kept input columns (ascending);
    ///   bias: its bias; n, sum: token count and Σx of its input; gram: XᵀX [inF, inF] or nil.
    public static func restore(weight w: [Float], out: Int, inF: Int, kept: [Int], bias: [Float]?, count n: Double,
                               sum s: [Double], gram g: [Double]?, method: RestoreMethod, damp: Double) -> RestoreResult {
        let k = kept.count
        let keptSet = Set(kept)
        let dropped = (0..<inF).filter { !keptSet.contains($0) }
        let wd = w.map(Double.init)
        var plain = [Float](repeating: 0, count: out * k)
        for i in 0..<out { for (j, c) in kept.enumerated() { plain[i * k + j] = w[i * inF + c] } }
        let b0 = bias.map { $0.map(Double.init) } ?? [Double](repeating: 0, count: out)
        if dropped.isEmpty {
            // Nothing removed: the consumer stays as it is (a bias-adding method adds a zero bias).
            let zero = g != nil ? 0.0 : nil
            return RestoreResult(weight: plain, bias: bias ?? (method != .lsq ? [Float](repeating: 0, count: out) : nil),
                                 errorBefore: zero, errorAfter: zero)
        }

        var newW = plain.map(Double.init)
        var delta = [Double](repeating: 0, count: out)  // b' − b
        var fellBack = false
        switch method {
        case .bias:
            for i in 0..<out {
                var acc = 0.0
                for c in dropped { acc += wd[i * inF + c] * s[c] / max(n, 1) }
                delta[i] = acc
            }
        case .lsq, .biasLSQ:
            let g = g!
            let m = method == .biasLSQ ? k + 1 : k
            // A = [[G_KK (+ s_K)], …] + λI on the G part.
            var a = [Double](repeating: 0, count: m * m)
            var diag = 0.0
            for (p, cp) in kept.enumerated() {
                for (q, cq) in kept.enumerated() { a[p * m + q] = g[cp * inF + cq] }
                diag += g[cp * inF + cp]
            }
            let lambda = k > 0 ? damp * diag / Double(k) : 0
            for p in 0..<k { a[p * m + p] += lambda }
            if method == .biasLSQ {
                for (p, cp) in kept.enumerated() { a[p * m + k] = s[cp]; a[k * m + p] = s[cp] }
                a[k * m + k] = n
            }
            // R = W·[G[:, K] (, s)]  [out, m]
            var bK = [Double](repeating: 0, count: inF * m)
            for r in 0..<inF {
                for (q, cq) in kept.enumerated() { bK[r * m + q] = g[r * inF + cq] }
                if method == .biasLSQ { bK[r * m + k] = s[r] }
            }
            var rMat = [Double](repeating: 0, count: out * m)
            if m > 0 && out > 0 && inF > 0 {
                wd.withUnsafeBufferPointer { wp in
                    bK.withUnsafeBufferPointer { bp in
                        rMat.withUnsafeMutableBufferPointer { rp in
                            BLAS.dgemm(transA: false, transB: false, M: out, N: m, K: inF, alpha: 1, a: wp.baseAddress!, lda: inF,
                                       b: bp.baseAddress!, ldb: m, beta: 0, c: rp.baseAddress!, ldc: m)
                        }
                    }
                }
            }
            if LinearAlgebra.solveRightSPD(&a, n: m, &rMat, rows: out) {
                for i in 0..<out { for q in 0..<k { newW[i * k + q] = rMat[i * m + q] } }
                if method == .biasLSQ { for i in 0..<out { delta[i] = rMat[i * m + k] } }
            } else {
                fellBack = true
            }
        }

        var before: Double? = nil, after: Double? = nil
        if let g {
            before = error(w: wd, out: out, inF: inF, kept: kept, newW: plain.map(Double.init), delta: [Double](repeating: 0, count: out), n: n, s: s, g: g)
            after = error(w: wd, out: out, inF: inF, kept: kept, newW: newW, delta: delta, n: n, s: s, g: g)
            if let b = before, let a = after, !(a <= b * (1 + 1e-9) + 1e-12) { fellBack = true }
        }
        if fellBack {
            return RestoreResult(weight: plain, bias: bias, errorBefore: before, errorAfter: before, fellBack: true)
        }
        let outBias: [Float]? = (bias != nil || method != .lsq) ? (0..<out).map { Float(b0[$0] + delta[$0]) } : nil
        return RestoreResult(weight: newW.map(Float.init), bias: outBias, errorBefore: before, errorAfter: after)
    }

    /// Σ_t ‖W x_t − W' x_{K,t} − δ‖² from the Gram matrix, the sum and the count.
    static func error(w: [Double], out: Int, inF: Int, kept: [Int], newW: [Double], delta: [Double], n: Double,
                      s: [Double], g: [Double]) -> Double {
        let k = kept.count
        // Full input-space weight difference D = W − scatter(W') [out, inF]; error = tr(D G Dᵀ) − 2δᵀ(D s) + n‖δ‖².
        var d = w
        for i in 0..<out { for (q, c) in kept.enumerated() { d[i * inF + c] -= newW[i * k + q] } }
        var dg = [Double](repeating: 0, count: out * inF)
        if out > 0 && inF > 0 {
            d.withUnsafeBufferPointer { dp in
                g.withUnsafeBufferPointer { gp in
                    dg.withUnsafeMutableBufferPointer { op in
                        BLAS.dgemm(transA: false, transB: false, M: out, N: inF, K: inF, alpha: 1, a: dp.baseAddress!, lda: inF,
                                   b: gp.baseAddress!, ldb: inF, beta: 0, c: op.baseAddress!, ldc: inF)
                    }
                }
            }
        }
        var e = 0.0
        for i in 0..<(out * inF) { e += dg[i] * d[i] }
        for i in 0..<out {
            var ds = 0.0
            for c in 0..<inF { ds += d[i * inF + c] * s[c] }
            e += -2 * delta[i] * ds + n * delta[i] * delta[i]
        }
        return max(e, 0)
    }
}
