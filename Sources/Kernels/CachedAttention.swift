// Causal grouped-query attention of new rows over a key/value cache (incremental decoding): the
// same arithmetic as `causalAttention` (scores = q·kᵀ·D^-0.5, softmax in float32, p·v) for rows
// at positions P ..< P+n, whose keys and values are already in the cache after those of
// positions 0 ..< P.
//
// Dimensions: n new rows, P cached positions before them, H query heads, Hkv key/value heads,
// D head size, rep = H / Hkv, w_g the value width of KV head g (D unless narrowed), VW = Σw.
//   q: [n, H, D]; keys: [≥ P+n, Hkv, D]; values: [≥ P+n, VW]; out: [n, rep·VW]
//   scratch per KV group: qp: [rep·n, D]; s: [rep·n, P+n]; op: [rep·n, D]
import _COpenBLAS
import Foundation

public func cachedAttention(q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                            out: UnsafeMutablePointer<Float>, start P: Int, rows n: Int,
                            H: Int, Hkv: Int, D: Int, valueWidths: [Int]? = nil) {
    precondition(P >= 0 && n >= 0 && H >= 0 && Hkv >= 0 && D >= 0, "negative size in cachedAttention")
    if H == 0 || D == 0 || n == 0 { return }
    precondition(Hkv > 0 && H % Hkv == 0, "query heads \(H) not a multiple of KV heads \(Hkv)")
    let rep = H / Hkv, L = P + n, M = rep * n
    let widths = valueWidths ?? [Int](repeating: D, count: Hkv)
    precondition(widths.count == Hkv && widths.allSatisfy { $0 >= 0 && $0 <= D },
                 "value widths \(widths) for \(Hkv) KV heads of size \(D)")
    let layout = ValueLayout(widths: widths, headsPerGroup: rep)
    let VW = layout.rowCount, OW = layout.columnCount
    let scale = Float(Foundation.pow(Double(D), -0.5))
    if n == 1 {
        singleRowAttention(q: q, keys: keys, values: values, out: out, L: L, H: H, Hkv: Hkv, D: D, layout: layout, scale: scale)
        return
    }
    let qp = UnsafeMutablePointer<Float>.allocate(capacity: M * D)
    let s = UnsafeMutablePointer<Float>.allocate(capacity: M * L)
    let op = UnsafeMutablePointer<Float>.allocate(capacity: M * D)
    defer { qp.deallocate(); s.deallocate(); op.deallocate() }
    for g in 0..<Hkv {
        // qp[j·n + r, :] = q[r, g·rep + j, :]
        for j in 0..<rep {
            for r in 0..<n { (qp + (j * n + r) * D).update(from: q + (r * H + g * rep + j) * D, count: D) }
        }
        // s[M, L] = scale · qp · keys[0..<L, g, :]ᵀ; row r sees positions 0 ... P + r.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(L), Int32(D), scale,
                    qp, Int32(D), keys + g * D, Int32(Hkv * D), 0, s, Int32(L))
        for j in 0..<rep {
            for r in 0..<n { softmaxRow(s + (j * n + r) * L, valid: P + r + 1, total: L) }
        }
        let w = layout.widths[g]
        if w == 0 { continue }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(M), Int32(w), Int32(L), 1,
                    s, Int32(L), values + layout.offsets[g], Int32(VW), 0, op, Int32(w))
        for j in 0..<rep {
            let column = layout.columns(ofHead: g * rep + j).lowerBound
            for r in 0..<n { (out + r * OW + column).update(from: op + (j * n + r) * w, count: w) }
        }
    }
}

/// One new row (decoding) over L cached positions: the same arithmetic without sgemm, which would
/// copy (pack) every cached key and value first. Per query head h of KV group g: scores =
/// scale · keys[0..<L, g, :] · q_h (a matrix–vector product, the cache read in place at its
/// stride), the softmax of the row, then out_h = values[0..<L, g's columns]ᵀ · p. The heads run on
/// the workers unless the cache is short.
private func singleRowAttention(q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                out: UnsafeMutablePointer<Float>, L: Int, H: Int, Hkv: Int, D: Int,
                                layout: ValueLayout, scale: Float) {
    let rep = H / Hkv, VW = layout.rowCount
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: H * L)
    defer { scores.deallocate() }
    let workers = L * H * D >= 1 << 15 ? min(BLAS.threads, H) : 1
    runItems(H, workers: workers) { h, _ in
        let g = h / rep, s = scores + h * L
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(L), Int32(D), scale, keys + g * D, Int32(Hkv * D),
                    q + h * D, 1, 0, s, 1)
        softmaxRow(s, valid: L, total: L)
        let w = layout.widths[g]
        if w == 0 { return }
        cblas_sgemv(CblasRowMajor, CblasTrans, Int32(L), Int32(w), 1, values + layout.offsets[g], Int32(VW),
                    s, 1, 0, out + layout.columns(ofHead: h).lowerBound, 1)
    }
}
