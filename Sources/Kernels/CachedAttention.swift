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
/// copy (pack) every cached key and value first. Per KV group, each cached key is read once for the
/// group's rep query heads (scores = scale · q·k, as sgemm's alpha applies it), then the softmax of
/// each head's row, then out_h = Σ_t p_t · v_t. The groups run on the workers when the cache is long.
private func singleRowAttention(q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                out: UnsafeMutablePointer<Float>, L: Int, H: Int, Hkv: Int, D: Int,
                                layout: ValueLayout, scale: Float) {
    let rep = H / Hkv, VW = layout.rowCount
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: H * L)
    defer { scores.deallocate() }
    let workers = L * H * D >= 1 << 18 ? min(BLAS.threads, Hkv) : 1
    runItems(Hkv, workers: workers) { g, _ in
        let s = scores + g * rep * L
        for t in 0..<L {
            let k = keys + (t * Hkv + g) * D
            for j in 0..<rep {
                let qh = q + (g * rep + j) * D
                var acc: Float = 0
                var d = 0
                var v = SIMD16<Float>()
                while d + 16 <= D {
                    v += UnsafeRawPointer(qh + d).loadUnaligned(as: SIMD16<Float>.self)
                        * UnsafeRawPointer(k + d).loadUnaligned(as: SIMD16<Float>.self)
                    d += 16
                }
                acc = v.sum()
                while d < D { acc += qh[d] * k[d]; d += 1 }
                s[j * L + t] = acc * scale
            }
        }
        for j in 0..<rep { softmaxRow(s + j * L, valid: L, total: L) }
        let w = layout.widths[g]
        if w == 0 { return }
        let v0 = values + layout.offsets[g]
        for j in 0..<rep {
            let o = out + layout.columns(ofHead: g * rep + j).lowerBound
            let p = s + j * L
            var c = 0
            while c + 16 <= w {
                // Two accumulators (even and odd positions): one would wait on the adder's latency.
                var even = SIMD16<Float>(), odd = SIMD16<Float>()
                var t = 0
                while t + 2 <= L {
                    even += p[t] * UnsafeRawPointer(v0 + t * VW + c).loadUnaligned(as: SIMD16<Float>.self)
                    odd += p[t + 1] * UnsafeRawPointer(v0 + (t + 1) * VW + c).loadUnaligned(as: SIMD16<Float>.self)
                    t += 2
                }
                if t < L { even += p[t] * UnsafeRawPointer(v0 + t * VW + c).loadUnaligned(as: SIMD16<Float>.self) }
                UnsafeMutableRawPointer(o + c).storeBytes(of: even + odd, as: SIMD16<Float>.self)
                c += 16
            }
            while c < w {
                var acc: Float = 0
                for t in 0..<L { acc += p[t] * v0[t * VW + c] }
                o[c] = acc
                c += 1
            }
        }
    }
}

