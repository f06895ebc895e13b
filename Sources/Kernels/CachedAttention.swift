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
