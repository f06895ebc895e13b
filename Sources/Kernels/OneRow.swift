// Linear maps of one input row (incremental decoding, batch 1): a matrix–vector product per weight,
// bound by the speed at which the weights stream from memory, not by arithmetic.
//
// Dimensions: K input features; map i has N_i output features; w_i: [N_i, K] (nn.Linear layout);
// x: [K]; y_i: [N_i].
//
// Speed: decoding runs seven maps a layer, each too small for a parallel region of its own to pay
// (waking the workers costs about what a 1 MB product takes). The maps that read the same input
// (q, k and v; gate and up) run in one region whose workers take equal shares of all their rows;
// the kernel reads one weight row at a time against x (which stays in L1), 32 lanes a step.
import Foundation

/// One linear map of a row: weights w[N, K], output y[N].
public struct RowMap {
    public var w: UnsafePointer<Float>
    public var y: UnsafeMutablePointer<Float>
    public var N: Int

    public init(w: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, N: Int) {
        self.w = w
        self.y = y
        self.N = N
    }
}

extension BLAS {
    /// y_i (+)= w_i · x for every map (accumulate: add to y_i), in one parallel region for all of
    /// them. Each output is one dot product over k in the same order whichever worker computes it,
    /// so the result does not depend on the thread count.
    public static func linearsOneRow(x: UnsafePointer<Float>, K: Int, _ maps: [RowMap], accumulate: Bool = false) {
        precondition(K >= 0 && maps.allSatisfy { $0.N >= 0 }, "negative size in linearsOneRow")
        let total = maps.reduce(0) { $0 + $1.N }
        if total == 0 { return }
        if K == 0 {
            if !accumulate { for m in maps { m.y.update(repeating: 0, count: m.N) } }
            return
        }
        let unit = 16
        let parts = threads > 1 && !isSplitting && total * K >= vectorSplitThreshold ? min(threads, max(1, total / unit)) : 1
        let bounds = (0...parts).map { $0 == parts ? total : total * $0 / parts / unit * unit }
        parallelBlocks(parts) { p in
            // The rows bounds[p]..<bounds[p+1] of the maps laid end to end.
            var first = 0
            for m in maps {
                let lo = max(bounds[p], first), hi = min(bounds[p + 1], first + m.N)
                if lo < hi { dotRows(w: m.w, x: x, y: m.y, K: K, rows: (lo - first)..<(hi - first), accumulate: accumulate) }
                first += m.N
            }
        }
    }
}

/// y[j] (+)= Σ_k w[j, k] · x[k] for j in `rows`: one row at a time, a single stream through
/// memory (four rows side by side, four streams, ran at half the speed), 32 lanes per step.
func dotRows(w: UnsafePointer<Float>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, K: Int,
             rows: Range<Int>, accumulate: Bool) {
    typealias V16 = SIMD16<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V16 { UnsafeRawPointer(p).loadUnaligned(as: V16.self) }
    let body = K / 32 * 32
    for j in rows {
        let r = w + j * K
        var a0 = V16(), a1 = V16()
        var k = 0
        while k < body {
            a0 += load(r + k) * load(x + k)
            a1 += load(r + k + 16) * load(x + k + 16)
            k += 32
        }
        var s = (a0 + a1).sum()
        while k < K { s += r[k] * x[k]; k += 1 }
        y[j] = accumulate ? y[j] + s : s
    }
}
