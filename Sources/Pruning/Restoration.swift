import Foundation
import Calibration
import Kernels
import LlamaModel
import TensorIO

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

    public init(weight: [Float], bias: [Float]?, errorBefore: Double? = nil, errorAfter: Double? = nil, fellBack: Bool = false) {
        self.weight = weight
        self.bias = bias
        self.errorBefore = errorBefore
        self.errorAfter = errorAfter
        self.fellBack = fellBack
    }
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
        var rTilde: [Double]?  // least squares: W·[G[:, K] (, s)] before the solve, for the error after
        var ridge = 0.0
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
            gemm(wd, bK, &rMat, M: out, N: m, K: inF, beta: 0)
            rTilde = rMat
            ridge = lambda
            if LinearAlgebra.solveRightSPD(&a, n: m, &rMat, rows: out) {
                for i in 0..<out { for q in 0..<k { newW[i * k + q] = rMat[i * m + q] } }
                if method == .biasLSQ { for i in 0..<out { delta[i] = rMat[i * m + k] } }
            } else {
                fellBack = true
            }
        }

        var before: Double? = nil, after: Double? = nil
        if let g {
            let e = errors(w: wd, out: out, inF: inF, kept: kept, dropped: dropped, g: g, s: s, n: n, newW: newW, delta: delta,
                           solved: fellBack ? nil : rTilde.map { (r: $0, ridge: ridge) }, biasColumn: method == .biasLSQ)
            before = e.before
            after = fellBack ? e.before : e.after
            if let b = before, let a = after, !(a <= b * (1 + 1e-9) + 1e-12) { fellBack = true }
        }
        if fellBack {
            return RestoreResult(weight: plain, bias: bias, errorBefore: before, errorAfter: before, fellBack: true)
        }
        let outBias: [Float]? = (bias != nil || method != .lsq) ? (0..<out).map { Float(b0[$0] + delta[$0]) } : nil
        return RestoreResult(weight: newW.map(Float.init), bias: outBias, errorBefore: before, errorAfter: after)
    }

    /// Σ_t ‖W x_t − W' x_{K,t} − δ‖² from the Gram matrix G, the sum s and the count n, before (W' = W_K,
    /// δ = 0) and after. With D = W − scatter(W') the error is tr(D G Dᵀ) − 2δᵀDs + n‖δ‖²; computed from
    /// G's blocks (K kept, R dropped) so that no [out, inF]·[inF, inF] product is needed:
    ///   before = tr(W_R G_RR W_Rᵀ);
    ///   bias (W' = W_K): before − 2δᵀ W_R s_R + n‖δ‖²;
    ///   least squares, P̃ = [W' (, δ)] solving P̃ (Ã₀ + λI_K) = R̃ = W·[G[:, K] (, s)]:
    ///     tr(W G Wᵀ) − Σ P̃⊙R̃ − λ‖W'‖², with tr(W G Wᵀ) = Σ W_K⊙R̃_K + Σ W_R⊙(W G[:, R]).
    /// Costs out·inF·|R| (plus out·|K| for the sums) instead of 2·out·inF².
    /// `newW` and `delta` are W' and δ; `solved` is present when they solve the least squares (R̃ and λ).
    static func errors(w: [Double], out: Int, inF: Int, kept: [Int], dropped: [Int], g: [Double], s: [Double], n: Double,
                       newW: [Double], delta: [Double], solved: (r: [Double], ridge: Double)?,
                       biasColumn: Bool) -> (before: Double, after: Double) {
        let k = kept.count, r = dropped.count
        // W_R [out, r], G_RR [r, r], G_KR [k, r], W_K [out, k]
        var wR = [Double](repeating: 0, count: out * r)
        var wK = [Double](repeating: 0, count: out * k)
        for i in 0..<out {
            for (j, c) in dropped.enumerated() { wR[i * r + j] = w[i * inF + c] }
            for (q, c) in kept.enumerated() { wK[i * k + q] = w[i * inF + c] }
        }
        var gRR = [Double](repeating: 0, count: r * r)
        for (a, ca) in dropped.enumerated() { for (b, cb) in dropped.enumerated() { gRR[a * r + b] = g[ca * inF + cb] } }
        // X = W_R G_RR, then (least squares) W G[:, R] = X + W_K G_KR
        var x = [Double](repeating: 0, count: out * r)
        gemm(wR, gRR, &x, M: out, N: r, K: r, beta: 0)
        var before = 0.0
        for i in 0..<(out * r) { before += wR[i] * x[i] }
        before = max(before, 0)
        guard let solved else {
            // W' = W_K, δ the bias method's (or zero)
            var e = before
            for i in 0..<out where delta[i] != 0 {
                var ds = 0.0
                for (j, c) in dropped.enumerated() { ds += wR[i * r + j] * s[c] }
                e += -2 * delta[i] * ds + n * delta[i] * delta[i]
            }
            return (before, max(e, 0))
        }
        var gKR = [Double](repeating: 0, count: k * r)
        for (q, cq) in kept.enumerated() { for (j, c) in dropped.enumerated() { gKR[q * r + j] = g[cq * inF + c] } }
        gemm(wK, gKR, &x, M: out, N: r, K: k, beta: 1)  // x = W G[:, R]
        let m = biasColumn ? k + 1 : k
        var total = 0.0, explained = 0.0, ridgeNorm = 0.0
        for i in 0..<out {
            for q in 0..<k {
                total += wK[i * k + q] * solved.r[i * m + q]
                explained += newW[i * k + q] * solved.r[i * m + q]
                ridgeNorm += newW[i * k + q] * newW[i * k + q]
            }
            if biasColumn { explained += delta[i] * solved.r[i * m + k] }
            for j in 0..<r { total += wR[i * r + j] * x[i * r + j] }
        }
        return (before, max(total - explained - solved.ridge * ridgeNorm, 0))
    }

    /// c[M, N] = a[M, K] · b[K, N] + beta · c, row-major arrays (nothing for an empty product).
    static func gemm(_ a: [Double], _ b: [Double], _ c: inout [Double], M: Int, N: Int, K: Int, beta: Double) {
        guard M > 0 && N > 0 && K > 0 else { return }
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    BLAS.dgemm(transA: false, transB: false, M: M, N: N, K: K, alpha: 1, a: ap.baseAddress!, lda: K,
                               b: bp.baseAddress!, ldb: N, beta: beta, c: cp.baseAddress!, ldc: N)
                }
            }
        }
    }
}

/// Inputs that do not go together: a sliced model not made from this dense model and plan, or
/// statistics that lack what the method needs.
public struct RestoreError: BadDataError {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// What restoring one layer did to its two consumers.
public struct LayerRestoreReport {
    public var layer: Int
    public var oProj: RestoreResult
    public var downProj: RestoreResult

    /// The report without the restored weights (what the table needs, kept once they are written:
    /// a 7B model's restored consumers are 120 MB a layer).
    public var withoutWeights: LayerRestoreReport {
        var r = self
        r.oProj.weight = []
        r.oProj.bias = nil
        r.downProj.weight = []
        r.downProj.bias = nil
        return r
    }
}

extension Restoration {
    /// The consumers compensated: o_proj after the heads, down_proj after the MLP.
    static let consumers: [(Projection, StatPoint)] = [(.o, .oProjInput), (.down, .downProjInput)]

    /// Writes `sliced` with o_proj and down_proj compensated, layer by layer, from the dense
    /// model it was sliced from (same plan) and the dense model's statistics. A method that adds
    /// a bias gives the consumers one where they had none.
    public static func restoreModel(sliced: Model, dense: Model, stats: StatisticsFile, plan: PlanFile,
                                    method: RestoreMethod, damp: Double, output: String,
                                    metadata extra: [String: String], progress: (Int) -> Void = { _ in }) throws
        -> [LayerRestoreReport]
    {
        let parent = try dense.fingerprint()
        guard sliced.sourceMetadata["parent_fingerprint"] == parent else {
            throw RestoreError("\(sliced.path): not sliced from \(dense.path) (its parent fingerprint differs)")
        }
        guard sliced.sourceMetadata["plan_digest"] == plan.digest else {
            throw RestoreError("\(sliced.path): not sliced with \(plan.path)")
        }
        try stats.requireComplete()
        try stats.requireModel(fingerprint: parent)
        if let recipe = stats.metadata["sequential"] {
            try SequentialRecipe.requireSame(recorded: recipe, asked: ["restore": method.rawValue, "damp": "\(damp)"],
                                             source: stats.path, stage: "restore")
        }
        let c = dense.config
        try plan.check(against: c)
        let addsBias = method != .lsq
        // Output tensors: the sliced model's, with o_proj and down_proj biases where the method adds them.
        var tensors: [(name: String, shape: [Int])] = []
        for name in sliced.tensorNames {
            tensors.append((name, sliced.shape(name)!))
            if addsBias, let (l, p, isBias) = TensorNames.projection(of: name), !isBias,
               p == .o || p == .down, !sliced.hasBias(l, p) {
                tensors.append((TensorNames.bias(l, p), [c.hiddenSize]))
            }
        }
        var meta = extra
        meta["fingerprint"] = Fingerprint.derived(from: try sliced.fingerprint(), stage: "restore",
                                                  inputs: [method.rawValue, "\(damp)", stats.metadata["windows_sha256"] ?? ""])
        meta["parent_fingerprint"] = parent
        meta["plan_digest"] = plan.digest
        meta["restore"] = method.rawValue
        let writer = try ModelWriter(path: output, config: sliced.config, tensors: tensors,
                                     dtype: { sliced.shape($0) != nil ? sliced.storageType($0) : .F32 },
                                     tokenizerJSON: sliced.tokenizerJSON, metadata: meta)
        var reports: [LayerRestoreReport] = []
        try writer.complete {
            try sliced.copy(TensorNames.embedding, to: writer)
            for l in 0..<c.numLayers {
                let report = try restoreLayer(l, dense: dense, stats: stats, plan: plan.layers[l], method: method, damp: damp)
                for name in sliced.layerTensorNames(l) {
                    var values = try sliced.floats(name)
                    if let (_, p, isBias) = TensorNames.projection(of: name), p == .o || p == .down {
                        let r = p == .o ? report.oProj : report.downProj
                        if !isBias { values = r.weight } else if let b = r.bias { values = b }
                        try writer.write(name, values)
                        if !isBias && addsBias && !sliced.hasBias(l, p) {
                            try writer.write(TensorNames.bias(l, p), r.bias ?? [Float](repeating: 0, count: c.hiddenSize))
                        }
                    } else {
                        try writer.write(name, values)
                    }
                }
                reports.append(report.withoutWeights)
                progress(l + 1)
            }
            try writer.write(TensorNames.finalNorm, try sliced.finalNorm())
            if !sliced.config.tieWordEmbeddings { try sliced.copy(TensorNames.head, to: writer) }
        }
        return reports
    }

    /// Compensates layer l's o_proj and down_proj for the columns the plan drops.
    static func restoreLayer(_ l: Int, dense: Model, stats: StatisticsFile, plan p: LayerPlan,
                             method: RestoreMethod, damp: Double) throws -> LayerRestoreReport {
        try restoreLayer(l, weights: try dense.layer(l), config: dense.config, stats: stats, plan: p, method: method, damp: damp)
    }

    /// The same from layer l's dense weights `d` and any source of its statistics.
    public static func restoreLayer(_ l: Int, weights d: LayerWeights, config c: LlamaConfig, stats: any StatisticsSource,
                                    plan p: LayerPlan, method: RestoreMethod, damp: Double) throws -> LayerRestoreReport {
        var results: [RestoreResult] = []
        for (projection, point) in consumers {
            let consumer = projection == .o ? d.o : d.down
            let kept = projection == .o ? Slicing.keptAttentionColumns(p, config: c, layer: l) : p.keptChannels
            let n = Double(try stats.count(l, point))
            let s = try stats.point(l, point, .sum, width: consumer.inFeatures)
            let g = try stats.gram(l, point)
            if method.needsGram && g == nil && kept.count < consumer.inFeatures {
                throw RestoreError("\(stats.path): no Gram matrix at layer \(l)'s \(point.shortName) input, which lost columns; calibrate with --gram \(point.shortName)")
            }
            results.append(restore(weight: consumer.weight, out: consumer.outFeatures, inF: consumer.inFeatures, kept: kept,
                                   bias: consumer.bias, count: n, sum: s, gram: g, method: method, damp: damp))
        }
        return LayerRestoreReport(layer: l, oProj: results[0], downProj: results[1])
    }

    /// The per-layer table of reconstruction errors, as `restore` prints it.
    public static func table(_ reports: [LayerRestoreReport]) -> [String] {
        func cell(_ r: RestoreResult) -> String {
            guard let b = r.errorBefore, let a = r.errorAfter else { return "      —" }
            return String(format: "%10.4g → %10.4g%@", b, a, r.fellBack ? " (kept the plain slice)" : "")
        }
        return ["layer  reconstruction error ‖WX + b − W'X_K − b'‖² over the calibration tokens: before → after"]
            + reports.map { String(format: "%5d  o_proj %@   down_proj %@", $0.layer, cell($0.oProj), cell($0.downProj)) }
    }
}
