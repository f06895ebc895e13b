// Causal grouped-query attention, as transformers' eager_attention_forward computes it in float32:
//   scores = (q · kᵀ) · D^-0.5 + causal mask;  p = softmax(scores) in float32;  out = p · v
// with query head h reading KV head h / (H / Hkv) (repeat_kv).
//
// Dimensions: T tokens, H query heads, Hkv key/value heads, D head size; rep = H / Hkv query heads
// per KV head; B query rows per block; L ≤ T keys seen by a block.
//   q: [T, H, D]; k: [T, Hkv, D]; v: [T, Hkv, D]; out: [T, H, D]
// Narrowed value heads (FASP's V/O pruning): KV head g has w_g ≤ D values, v: [T, Σw] with
// group g at columns Σ_{g'<g} w_g'; its query heads write w_g values each, so out: [T, rep·Σw]
// with head h = g·rep + j at columns rep·Σ_{g'<g} w_g' + j·w_g.
//   per worker scratch: qp: [rep·B, D] (the block's queries of one KV group, head-major);
//                       s: [rep·B, L] (scores, then probabilities); op: [rep·B, D]
//
// Speed: the work is cut into (KV group, query block) items. A block of rows i0..<i0+B needs only
// keys 0..<i0+B, so the masked upper triangle is skipped but for half a B×B square per block, and
// the rep query heads sharing a KV head are stacked into one sgemm of rep·B rows. Items run on
// `BLAS.threads` workers, each calling a single-threaded sgemm; each item's arithmetic is the same
// whichever worker runs it, so the result does not depend on scheduling.
import _COpenBLAS
import Foundation

/// Rows of queries (over all heads of a KV group) per block: enough for sgemm to run near peak,
/// few enough that the wasted half-square on the diagonal stays a few percent of the work.
nonisolated(unsafe) var attentionBlockTarget = 192

/// With `logSumExp` ([T, H]), each row's log Σ_j e^(score_j) is recorded for the backward
/// (`causalAttentionBackward` recomputes the probabilities from it instead of keeping [H, T, T]).
public func causalAttention(q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                            v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                            T: Int, H: Int, Hkv: Int, D: Int, valueWidths: [Int]? = nil,
                            logSumExp: UnsafeMutablePointer<Float>? = nil) {
    precondition(T >= 0 && H >= 0 && Hkv >= 0 && D >= 0, "negative size in causalAttention")
    if H == 0 || T == 0 { return }
    let values = ValueLayout.checked(valueWidths, H: H, Hkv: Hkv, D: D)
    if D == 0 { return }
    let rep = values.headsPerGroup
    let (B, blocks, items, workers) = attentionItems(T: T, rep: rep, Hkv: Hkv)
    let M = rep * B
    let stride = M * T + 2 * M * D
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: workers * stride)
    defer { scratch.deallocate() }
    let scale = Float(Foundation.pow(Double(D), -0.5))  // Python's head_dim**-0.5, then float

    // Largest blocks first, so that the last items to start are the cheapest.
    func run(item: Int, worker: Int) {
        let b = blocks - 1 - item / Hkv, g = item % Hkv
        let s = scratch + worker * stride
        attentionBlock(q: q, k: k, v: v, out: out, T: T, H: H, Hkv: Hkv, D: D, values: values, group: g,
                       rowStart: b * B, rows: min(B, T - b * B), scale: scale,
                       qp: s + M * T, s: s, op: s + M * T + M * D, lse: logSumExp)
    }
    runItems(items, workers: workers, run)
}

/// The (KV group, query block) work items of causal attention and its backward: B query rows a
/// block, the blocks of T rows, their items over Hkv groups and the workers that share them.
func attentionItems(T: Int, rep: Int, Hkv: Int) -> (B: Int, blocks: Int, items: Int, workers: Int) {
    let B = min(T, max(8, attentionBlockTarget / rep))
    let blocks = (T + B - 1) / B
    return (B, blocks, blocks * Hkv, min(BLAS.threads, blocks * Hkv))
}

/// Runs items 0..<count on `workers` workers (inside a parallel region: their products are not
/// split), in order of taking; `run(item, worker)` gets the worker's index for its scratch. One
/// worker runs inline.
func runItems(_ count: Int, workers: Int, _ run: (Int, Int) -> Void) {
    if workers <= 1 {
        for i in 0..<count { run(i, 0) }
        return
    }
    let next = ItemCounter()
    BLAS.parallelBlocks(workers) { w in
        while let i = next.take(below: count) { run(i, w) }
    }
}

/// Hands out work items 0, 1, … to concurrent workers.
final class ItemCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func take(below n: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard value < n else { return nil }
        value += 1
        return value - 1
    }
}

/// Query rows i0..<i0+rows of the rep heads of KV group g.
private func attentionBlock(q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                            v: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                            T: Int, H: Int, Hkv: Int, D: Int, values: ValueLayout, group g: Int, rowStart i0: Int,
                            rows: Int, scale: Float, qp: UnsafeMutablePointer<Float>,
                            s: UnsafeMutablePointer<Float>, op: UnsafeMutablePointer<Float>,
                            lse: UnsafeMutablePointer<Float>?) {
    let rep = H / Hkv, M = rep * rows, L = i0 + rows
    // qp[j·rows + r, :] = q[i0 + r, g·rep + j, :]
    for j in 0..<rep {
        for r in 0..<rows {
            (qp + (j * rows + r) * D).update(from: q + ((i0 + r) * H + g * rep + j) * D, count: D)
        }
    }
    // s[M, L] = scale · qp[M, D] · k[0..<L, g, :]ᵀ
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(L), Int32(D), scale,
                qp, Int32(D), k + g * D, Int32(Hkv * D), 0, s, Int32(L))
    for j in 0..<rep {
        for r in 0..<rows {
            let e = softmaxRow(s + (j * rows + r) * L, valid: i0 + r + 1, total: L)
            lse?[(i0 + r) * H + g * rep + j] = e
        }
    }
    // op[M, w] = s[M, L] · v[0..<L, g's w values]
    let w = values.widths[g], VW = values.rowCount, OW = values.columnCount
    if w == 0 { return }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(M), Int32(w), Int32(L), 1,
                s, Int32(L), v + values.offsets[g], Int32(VW), 0, op, Int32(w))
    for j in 0..<rep {
        let column = values.columns(ofHead: g * rep + j).lowerBound
        for r in 0..<rows {
            (out + (i0 + r) * OW + column).update(from: op + (j * rows + r) * w, count: w)
        }
    }
}

/// In place: x[0..<valid] = softmax(x[0..<valid]) (max-shifted, as torch), x[valid..<total] = 0
/// (the masked keys, whose e^(−inf) torch adds as zeros). Returns log Σ e^x (max + log of the sum).
@inline(__always) @discardableResult
func softmaxRow(_ x: UnsafeMutablePointer<Float>, valid n: Int, total: Int) -> Float {
    var mv = Float8(repeating: -.infinity)
    var i = 0
    while i + 8 <= n { mv = maxLanes(mv, loadFloat8(x + i)); i += 8 }
    var m = mv.max()
    while i < n { m = max(m, x[i]); i += 1 }
    let mvec = Float8(repeating: m)
    var acc = Float8(repeating: 0)
    i = 0
    while i + 8 <= n {
        let e = exp8(loadFloat8(x + i) - mvec)
        storeFloat8(e, x + i)
        acc += e
        i += 8
    }
    if i < n {
        var t = Float8(repeating: -.infinity)
        for j in 0..<(n - i) { t[j] = x[i + j] }
        let e = exp8(t - mvec)
        for j in 0..<(n - i) { x[i + j] = e[j] }
        acc += e  // masked lanes are e^(−inf) = 0
    }
    let inv = 1 / acc.sum()
    let iv = Float8(repeating: inv)
    i = 0
    while i + 8 <= n { storeFloat8(loadFloat8(x + i) * iv, x + i); i += 8 }
    while i < n { x[i] *= inv; i += 1 }
    if total > n { (x + n).update(repeating: 0, count: total - n) }
    return m + Foundation.log(acc.sum())
}

/// The naive Double reference of `causalAttention`. q: [T, H, D]; k, v: [T, Hkv, D]; returns
/// [T, H, D].
public func causalAttentionReference(q: [Double], k: [Double], v: [Double], T: Int, H: Int,
                                     Hkv: Int, D: Int) -> [Double] {
    var out = [Double](repeating: 0, count: T * H * D)
    if H == 0 { return out }
    let rep = H / Hkv
    for h in 0..<H {
        let g = h / rep
        for i in 0..<T {
            let p = causalProbabilitiesReference(q: q, k: k, H: H, Hkv: Hkv, D: D, head: h, row: i)
            for d in 0..<D {
                var acc = 0.0
                for j in 0...i { acc += p[j] * v[(j * Hkv + g) * D + d] }
                out[(i * H + h) * D + d] = acc
            }
        }
    }
    return out
}

/// softmax_j(q_i · k_j / √D) over keys j ≤ i of query head h (KV head h / (H/Hkv)), in Double:
/// [i + 1].
func causalProbabilitiesReference(q: [Double], k: [Double], H: Int, Hkv: Int, D: Int, head h: Int, row i: Int)
    -> [Double] {
    let g = h / (H / Hkv), scale = 1 / Double(D).squareRoot()
    var p = (0...i).map { j in (0..<D).reduce(0.0) { $0 + q[(i * H + h) * D + $1] * k[(j * Hkv + g) * D + $1] } * scale }
    let m = p.max()!
    p = p.map { Foundation.exp($0 - m) }
    let sum = p.reduce(0, +)
    return p.map { $0 / sum }
}
