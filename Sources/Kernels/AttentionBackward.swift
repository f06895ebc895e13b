// The backward of `causalAttention` (Attention.swift). The forward records each row's log-sum-exp
// of scores, so that the probabilities are recomputed here block by block rather than kept
// ([H, T, T] per layer would be 150 MB for SmolLM2 at T = 2048). Per query head, in the forward's
// notation (scores s = scale·q·kᵀ, p = softmax(s) over keys j ≤ i, out = p·v):
//   p    = e^(s − lse)                      (masked keys: 0)
//   dv  += pᵀ · dout;    dp = dout · vᵀ
//   ds   = p ⊙ (dp − Σ_j p·dp)              (softmax backward; Σ_j p_j·dp_j = dout·out)
//   dq  += scale · ds · k;   dk += scale · dsᵀ · q
//
// Dimensions as in Attention.swift: T tokens, H query heads, Hkv KV heads, D head size, rep = H/Hkv,
// VW = Σ value widths, OW = rep·VW; M = rep·B query rows of a block, L ≤ T keys it sees.
//   q, dq: [T, H, D]; k, dk: [T, Hkv, D]; v, dv: [T, VW]; dout: [T, OW]; lse: [T, H]
//   per worker: qp, dqp: [M, D]; dop: [M, D]; p, dp: [M, T]; its own dk [T, Hkv·D] and dv [T, VW]
//
// Work is cut into the forward's (KV group, query block) items. Keys and values are shared by every
// query block, so each worker accumulates dk and dv in its own buffers, summed after the region in
// worker order; items go to workers in a fixed stride (not first come), so that the result
// depends on the thread count only, like every kernel here.
import _COpenBLAS
import Foundation

/// Accumulates the gradients of q, k and v (after rotary) given the gradient of the attention
/// output `dout` and the forward's inputs and recorded `lse`.
public func causalAttentionBackward(dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                    v: UnsafePointer<Float>, lse: UnsafePointer<Float>,
                                    dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
                                    dv: UnsafeMutablePointer<Float>,
                                    T: Int, H: Int, Hkv: Int, D: Int, valueWidths: [Int]? = nil) {
    precondition(T >= 0 && H >= 0 && Hkv >= 0 && D >= 0, "negative size in causalAttentionBackward")
    if H == 0 || T == 0 || D == 0 { return }
    let values = ValueLayout.checked(valueWidths, H: H, Hkv: Hkv, D: D)
    let rep = values.headsPerGroup
    let (B, blocks, items, workers) = attentionItems(T: T, rep: rep, Hkv: Hkv)
    let M = rep * B
    let KW = Hkv * D, VW = values.rowCount
    let stride = 2 * M * T + 3 * M * D
    let accumulators = (workers - 1) * T * (KW + VW)  // worker 0 accumulates into dk, dv themselves
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: workers * stride + accumulators)
    defer { scratch.deallocate() }
    (scratch + workers * stride).initialize(repeating: 0, count: accumulators)
    let scale = Float(Foundation.pow(Double(D), -0.5))

    func accumulatorsOf(_ worker: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) {
        if worker == 0 { return (dk, dv) }
        let base = scratch + workers * stride + (worker - 1) * T * (KW + VW)
        return (base, base + T * KW)
    }
    func run(worker: Int) {
        let s = scratch + worker * stride
        let (dkw, dvw) = accumulatorsOf(worker)
        for item in Swift.stride(from: worker, to: items, by: workers) {
            let b = blocks - 1 - item / Hkv, g = item % Hkv
            attentionBlockBackward(
                dout: dout, q: q, k: k, v: v, lse: lse, dq: dq, dk: dkw, dv: dvw, T: T, H: H, Hkv: Hkv, D: D,
                values: values, group: g, rowStart: b * B, rows: min(B, T - b * B), scale: scale,
                p: s, dp: s + M * T, qp: s + 2 * M * T, dop: s + 2 * M * T + M * D, dqp: s + 2 * M * T + 2 * M * D)
        }
    }
    if workers <= 1 {
        run(worker: 0)
    } else {
        BLAS.parallelBlocks(workers) { run(worker: $0) }
        for w in 1..<workers {
            let (dkw, dvw) = accumulatorsOf(w)
            add(dk, dkw, count: T * KW)
            add(dv, dvw, count: T * VW)
        }
    }
}

/// Query rows i0..<i0+rows of the rep heads of KV group g (see the file's equations).
private func attentionBlockBackward(
    dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    lse: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>,
    dv: UnsafeMutablePointer<Float>, T: Int, H: Int, Hkv: Int, D: Int, values: ValueLayout, group g: Int,
    rowStart i0: Int, rows: Int, scale: Float, p: UnsafeMutablePointer<Float>, dp: UnsafeMutablePointer<Float>,
    qp: UnsafeMutablePointer<Float>, dop: UnsafeMutablePointer<Float>, dqp: UnsafeMutablePointer<Float>
) {
    let rep = H / Hkv, M = rep * rows, L = i0 + rows
    let w = values.widths[g], VW = values.rowCount, OW = values.columnCount
    // qp[j·rows + r, :] = q[i0 + r, g·rep + j, :];  dop[j·rows + r, :w] = dout[i0 + r, head g·rep + j's columns]
    for j in 0..<rep {
        let column = values.columns(ofHead: g * rep + j).lowerBound
        for r in 0..<rows {
            (qp + (j * rows + r) * D).update(from: q + ((i0 + r) * H + g * rep + j) * D, count: D)
            (dop + (j * rows + r) * w).update(from: dout + (i0 + r) * OW + column, count: w)
        }
    }
    // p[M, L] = e^(scale · qp · k[0..<L, g]ᵀ − lse), as the forward's probabilities
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(L), Int32(D), scale,
                qp, Int32(D), k + g * D, Int32(Hkv * D), 0, p, Int32(L))
    for j in 0..<rep {
        for r in 0..<rows {
            exponentiateRow(p + (j * rows + r) * L, minus: lse[(i0 + r) * H + g * rep + j], valid: i0 + r + 1, total: L)
        }
    }
    if w == 0 { return }  // no values: the output, and so every gradient here, is zero
    // dv[0..<L, g's w] += pᵀ · dop;  dp[M, L] = dop · v[0..<L, g's w]ᵀ
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(L), Int32(w), Int32(M), 1,
                p, Int32(L), dop, Int32(w), 1, dv + values.offsets[g], Int32(VW))
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(L), Int32(w), 1,
                dop, Int32(w), v + values.offsets[g], Int32(VW), 0, dp, Int32(L))
    // ds = p ⊙ (dp − Σ_j p·dp), in dp
    for m in 0..<M { softmaxBackwardRow(p + m * L, dp + m * L, L) }
    // dqp[M, D] = scale · ds · k[0..<L, g];  dq rows += dqp
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(M), Int32(D), Int32(L), scale,
                dp, Int32(L), k + g * D, Int32(Hkv * D), 0, dqp, Int32(D))
    for j in 0..<rep {
        for r in 0..<rows {
            let target = dq + ((i0 + r) * H + g * rep + j) * D, source = dqp + (j * rows + r) * D
            for d in 0..<D { target[d] += source[d] }
        }
    }
    // dk[0..<L, g] += scale · dsᵀ · qp
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(L), Int32(D), Int32(M), scale,
                dp, Int32(L), qp, Int32(D), 1, dk + g * D, Int32(Hkv * D))
}

/// In place: dp = p ⊙ (dp − Σ_j p_j·dp_j) over one row of n.
@inline(__always)
private func softmaxBackwardRow(_ p: UnsafePointer<Float>, _ dp: UnsafeMutablePointer<Float>, _ n: Int) {
    var acc = Float8(repeating: 0)
    var i = 0
    while i + 8 <= n { acc += loadFloat8(p + i) * loadFloat8(dp + i); i += 8 }
    var dot = acc.sum()
    while i < n { dot += p[i] * dp[i]; i += 1 }
    let d = Float8(repeating: dot)
    i = 0
    while i + 8 <= n { storeFloat8(loadFloat8(p + i) * (loadFloat8(dp + i) - d), dp + i); i += 8 }
    while i < n { dp[i] = p[i] * (dp[i] - dot); i += 1 }
}

/// In place: x[0..<valid] = e^(x − lse), x[valid..<total] = 0.
@inline(__always)
private func exponentiateRow(_ x: UnsafeMutablePointer<Float>, minus lse: Float, valid n: Int, total: Int) {
    let shift = Float8(repeating: lse)
    var i = 0
    while i + 8 <= n { storeFloat8(exp8(loadFloat8(x + i) - shift), x + i); i += 8 }
    while i < n { x[i] = Foundation.exp(x[i] - lse); i += 1 }
    if total > n { (x + n).update(repeating: 0, count: total - n) }
}

/// The naive Double reference of `causalAttentionBackward` for full-width values: q: [T, H, D];
/// k, v: [T, Hkv, D]; dout: [T, H, D]; returns (dq, dk, dv) in the same shapes.
public func causalAttentionBackwardReference(dout: [Double], q: [Double], k: [Double], v: [Double],
                                             T: Int, H: Int, Hkv: Int, D: Int)
    -> (dq: [Double], dk: [Double], dv: [Double]) {
    var dq = [Double](repeating: 0, count: T * H * D)
    var dk = [Double](repeating: 0, count: T * Hkv * D), dv = dk
    if H == 0 { return (dq, dk, dv) }
    let rep = H / Hkv, scale = 1 / Double(D).squareRoot()
    var dp = [Double](repeating: 0, count: T)
    for h in 0..<H {
        let g = h / rep
        for i in 0..<T {
            // forward: p_j = softmax_j(scale · q_i·k_j), j ≤ i
            let p = causalProbabilitiesReference(q: q, k: k, H: H, Hkv: Hkv, D: D, head: h, row: i)
            // backward: out_i = Σ_j p_j v_j
            var pdp = 0.0
            for j in 0...i {
                var dot = 0.0
                for d in 0..<D {
                    dot += dout[(i * H + h) * D + d] * v[(j * Hkv + g) * D + d]
                    dv[(j * Hkv + g) * D + d] += p[j] * dout[(i * H + h) * D + d]
                }
                dp[j] = dot
                pdp += p[j] * dot
            }
            for j in 0...i {
                let ds = p[j] * (dp[j] - pdp) * scale
                for d in 0..<D {
                    dq[(i * H + h) * D + d] += ds * k[(j * Hkv + g) * D + d]
                    dk[(j * Hkv + g) * D + d] += ds * q[(i * H + h) * D + d]
                }
            }
        }
    }
    return (dq, dk, dv)
}
