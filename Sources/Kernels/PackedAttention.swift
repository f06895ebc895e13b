// Causal grouped-query attention over packed sequences that share a prefix: a context and the
// continuations that follow it (zero-shot scoring: one pass over a question with all its answers).
// The same arithmetic as `causalAttention` (scores = q·kᵀ·D^-0.5, softmax in float32, p·v), with
// a mask that follows the sequences instead of one triangle.
//
// Dimensions: H query heads, Hkv key/value heads, D head size, rep = H / Hkv; a group of n rows:
// P context rows, then the rows of each continuation in turn.
//   q: [R, H, D]; k: [R, Hkv, D]; v: [R, Σw] (value widths as in causalAttention); out: [R, rep·Σw]
// Within a group, context row i sees context rows 0…i; a row at offset i of continuation c sees
// every context row and the rows 0…i of continuation c — exactly what it would see in its own
// sequence `context + continuation c`. Groups never see each other.
//   per worker scratch: qp: [rep·n, D]; s: [rep·n, n]; op: [rep·n, D]
import _COpenBLAS
import Foundation

/// Rows of one packed group: a context and the continuations that follow it.
public struct PackedGroup: Sendable, Equatable {
    /// The group's first row in the packed rows.
    public var start: Int
    public var contextLength: Int
    public var continuationLengths: [Int]

    public init(start: Int, contextLength: Int, continuationLengths: [Int]) {
        self.start = start
        self.contextLength = contextLength
        self.continuationLengths = continuationLengths
    }

    public var rowCount: Int { contextLength + continuationLengths.reduce(0, +) }

    /// Per row of the group: its sequence (−1 for the context, else the continuation's index)
    /// and its position in its own sequence `context + continuation`.
    public var rows: [(sequence: Int, position: Int)] {
        var out = (0..<contextLength).map { (sequence: -1, position: $0) }
        for (c, n) in continuationLengths.enumerated() {
            out += (0..<n).map { (sequence: c, position: contextLength + $0) }
        }
        return out
    }
}

public func packedAttention(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                            out: UnsafeMutablePointer<Float>, groups: [PackedGroup],
                            H: Int, Hkv: Int, D: Int, valueWidths: [Int]? = nil) {
    precondition(H >= 0 && Hkv >= 0 && D >= 0, "negative size in packedAttention")
    if H == 0 || D == 0 || groups.isEmpty { return }
    let values = ValueLayout.checked(valueWidths, H: H, Hkv: Hkv, D: D)
    let rep = values.headsPerGroup
    let items = groups.count * Hkv
    let workers = min(BLAS.threads, items)
    let n = groups.map(\.rowCount).max() ?? 0
    let M = rep * n
    let stride = M * n + 2 * M * D
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, workers * stride))
    defer { scratch.deallocate() }
    let scale = Float(Foundation.pow(Double(D), -0.5))
    let rows = groups.map(\.rows)

    func run(item: Int, worker: Int) {
        let i = item / Hkv, g = item % Hkv
        let s = scratch + worker * stride
        packedGroup(q: q, k: k, v: v, out: out, group: groups[i], rows: rows[i], H: H, Hkv: Hkv, D: D,
                    values: values, kvGroup: g, scale: scale, qp: s + M * n, s: s, op: s + M * n + M * D)
    }
    runItems(items, workers: workers, run)
}

/// Whether a row (sequence a, position i) sees a key (sequence b, position j).
@inline(__always)
private func sees(_ a: (sequence: Int, position: Int), _ b: (sequence: Int, position: Int)) -> Bool {
    b.position <= a.position && (b.sequence == -1 || b.sequence == a.sequence)
}

/// Every row of one packed group for the rep heads of KV group g.
private func packedGroup(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                         out: UnsafeMutablePointer<Float>, group: PackedGroup, rows: [(sequence: Int, position: Int)],
                         H: Int, Hkv: Int, D: Int, values: ValueLayout, kvGroup g: Int, scale: Float,
                         qp: UnsafeMutablePointer<Float>, s: UnsafeMutablePointer<Float>, op: UnsafeMutablePointer<Float>) {
    let rep = H / Hkv, n = group.rowCount, M = rep * n, i0 = group.start
    if n == 0 { return }
    // qp[j·n + r, :] = q[i0 + r, g·rep + j, :]
    for j in 0..<rep {
        for r in 0..<n {
            (qp + (j * n + r) * D).update(from: q + ((i0 + r) * H + g * rep + j) * D, count: D)
        }
    }
    // s[M, n] = scale · qp[M, D] · k[i0..<i0+n, g, :]ᵀ, then −∞ where a row does not see a key.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(n), Int32(D), scale,
                qp, Int32(D), k + (i0 * Hkv + g) * D, Int32(Hkv * D), 0, s, Int32(n))
    for j in 0..<rep {
        for r in 0..<n {
            let row = s + (j * n + r) * n
            for c in 0..<n where !sees(rows[r], rows[c]) { row[c] = -.infinity }
            softmaxRow(row, valid: n, total: n)
        }
    }
    let w = values.widths[g], VW = values.rowCount, OW = values.columnCount
    if w == 0 { return }
    // op[M, w] = s[M, n] · v[i0..<i0+n, g's w values]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(M), Int32(w), Int32(n), 1,
                s, Int32(n), v + i0 * VW + values.offsets[g], Int32(VW), 0, op, Int32(w))
    for j in 0..<rep {
        let column = values.columns(ofHead: g * rep + j).lowerBound
        for r in 0..<n {
            (out + (i0 + r) * OW + column).update(from: op + (j * n + r) * w, count: w)
        }
    }
}

/// The naive Double reference of `packedAttention` (value heads of width D): every row of every
/// group attends over the keys it sees. q: [R, H, D]; k, v: [R, Hkv, D]; returns [R, H, D].
public func packedAttentionReference(q: [Double], k: [Double], v: [Double], groups: [PackedGroup],
                                     H: Int, Hkv: Int, D: Int) -> [Double] {
    var out = [Double](repeating: 0, count: q.count)
    let rep = H / Hkv, scale = 1 / Double(D).squareRoot()
    for group in groups {
        let rows = group.rows
        for (a, ra) in rows.enumerated() {
            let i = group.start + a
            for h in 0..<H {
                let g = h / rep
                let keys = rows.indices.filter { sees(ra, rows[$0]) }
                let scores = keys.map { b -> Double in
                    let j = group.start + b
                    return (0..<D).reduce(0.0) { $0 + q[(i * H + h) * D + $1] * k[(j * Hkv + g) * D + $1] } * scale
                }
                let m = scores.max() ?? 0
                let e = scores.map { Foundation.exp($0 - m) }
                let sum = e.reduce(0, +)
                for d in 0..<D {
                    var acc = 0.0
                    for (e, b) in zip(e, keys) { acc += e * v[((group.start + b) * Hkv + g) * D + d] }
                    out[(i * H + h) * D + d] = acc / sum
                }
            }
        }
    }
    return out
}
