// Per-position cross-entropy of next-token targets: nll[t] = logsumexp(logits[t, :]) − logits[t, y_t],
// the terms of torch.nn.functional.cross_entropy(reduction="none"), with the log-sum-exp accumulated
// in float64 (from float32 logits) so that perplexities over millions of tokens keep their digits.
//
// Dimensions: T positions, V vocabulary.
//   logits: [T, V]; targets: [T] (each in 0..<V); returns [T]
import Foundation

public func crossEntropy(logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, T: Int,
                         V: Int) -> [Double] {
    checkTargets(targets, T: T, V: V, lowest: 0)
    var nll = [Double](repeating: 0, count: T)
    nll.withUnsafeMutableBufferPointer { outBuffer in
        let out = outBuffer.baseAddress!
        parallelChunks(T, grain: max(1, 16_384 / V)) { rows in
            for t in rows {
                let row = logits + t * V
                let lse = logSumExp(row, V)
                out[t] = lse - Double(row[Int(targets[t])])
            }
        }
    }
    return nll
}

/// Cross-entropy and its backward in one pass over logits [T, V], in place: each row with a target
/// (≥ 0; −1 marks a row that counts for nothing) becomes the gradient of `scale` × its loss,
///   dlogits[t, :] = scale · (softmax(logits[t, :]) − onehot(target_t)),
/// rows without one become zeros. Returns Σ_t nll[t] over the counted rows (float64; the loss
/// before `scale`).
public func crossEntropyBackward(logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>, T: Int, V: Int,
                                 scale: Float) -> Double {
    checkTargets(targets, T: T, V: V, lowest: -1)
    var nll = [Double](repeating: 0, count: T)
    nll.withUnsafeMutableBufferPointer { outBuffer in
        let out = outBuffer.baseAddress!
        parallelChunks(T, grain: max(1, 16_384 / V)) { rows in
            for t in rows {
                let row = logits + t * V, y = Int(targets[t])
                guard y >= 0 else {
                    row.update(repeating: 0, count: V)
                    continue
                }
                let lse = logSumExp(row, V)
                out[t] = lse - Double(row[y])
                let shift = Float8(repeating: Float(lse)), sv = Float8(repeating: scale)
                var i = 0
                while i + 8 <= V { storeFloat8(exp8(loadFloat8(row + i) - shift) * sv, row + i); i += 8 }
                while i < V { row[i] = Foundation.exp(row[i] - Float(lse)) * scale; i += 1 }
                row[y] -= scale
            }
        }
    }
    return nll.reduce(0, +)
}

/// Every target in lowest..<V (−1: a position that counts for nothing, where allowed).
private func checkTargets(_ targets: UnsafePointer<Int32>, T: Int, V: Int, lowest: Int32) {
    precondition(T >= 0 && V > 0, "bad size in cross-entropy: T \(T) V \(V)")
    for t in 0..<T {
        precondition(targets[t] >= lowest && Int(targets[t]) < V,
                     "target \(targets[t]) at position \(t) outside the vocabulary (\(V))")
    }
}

/// log Σ e^x[i] in Double: max in float (exact), then Σ e^(x − max) in 4×4 Double lanes.
@inline(__always)
private func logSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> Double {
    var mv = Float8(repeating: -.infinity)
    var i = 0
    while i + 8 <= n { mv = maxLanes(mv, loadFloat8(x + i)); i += 8 }
    var m = mv.max()
    while i < n { m = max(m, x[i]); i += 1 }
    if m == .infinity || m.isNaN { return Double(m) }
    if m == -.infinity { return -.infinity }
    let md = Double4(repeating: Double(m))
    var a0 = Double4(repeating: 0), a1 = a0
    i = 0
    while i + 8 <= n {
        let v = loadFloat8(x + i)
        a0 += exp4(Double4(v.lowHalf) - md)
        a1 += exp4(Double4(v.highHalf) - md)
        i += 8
    }
    var sum = (a0 + a1).sum()
    while i < n { sum += Foundation.exp(Double(x[i]) - Double(m)); i += 1 }
    return Double(m) + Foundation.log(sum)
}

/// The naive Double reference of `crossEntropy`. logits: [T, V]; returns [T].
public func crossEntropyReference(logits: [Double], targets: [Int32], T: Int, V: Int) -> [Double] {
    (0..<T).map { t in
        let row = logits[(t * V)..<((t + 1) * V)]
        let m = row.max()!
        let lse = m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
        return lse - row[t * V + Int(targets[t])]
    }
}

/// The naive Double reference of `crossEntropyBackward`: the gradient of scale · Σ_t nll[t]
/// over rows with a target ≥ 0. logits: [T, V]; returns [T, V].
public func crossEntropyBackwardReference(logits: [Double], targets: [Int32], T: Int, V: Int, scale: Double)
    -> [Double] {
    var d = [Double](repeating: 0, count: T * V)
    for t in 0..<T where targets[t] >= 0 {
        let row = logits[(t * V)..<((t + 1) * V)]
        let m = row.max()!
        let sum = row.reduce(0) { $0 + Foundation.exp($1 - m) }
        for v in 0..<V { d[t * V + v] = scale * Foundation.exp(logits[t * V + v] - m) / sum }
        d[t * V + Int(targets[t])] -= scale
    }
    return d
}

/// The index of the largest of x[0..<n] (the lowest index among equals, as torch.argmax), for
/// greedy decoding and greedy checks.
public func argmax(_ x: UnsafePointer<Float>, count n: Int) -> Int {
    var best = 0
    for i in 1..<max(n, 1) where x[i] > x[best] { best = i }
    return best
}
