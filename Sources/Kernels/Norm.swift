// RMSNorm as transformers' LlamaRMSNorm computes it in float32:
//   out = weight · (x · rsqrt(mean(x²) + eps))
// with the two products rounded in that order.
//
// Dimensions: T tokens, C hidden.
//   x: [T, C]; weight: [C]; out: [T, C]

/// out[t, :] = weight · (x[t, :] · 1/sqrt(mean(x[t, :]²) + eps)). out may alias x.
public func rmsNorm(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
                    out: UnsafeMutablePointer<Float>, T: Int, C: Int) {
    precondition(T >= 0 && C >= 0, "negative size in rmsNorm: T \(T) C \(C)")
    if T == 0 || C == 0 { return }
    parallelChunks(T, grain: max(1, 32_768 / C)) { rows in
        for t in rows { rmsNormRow(x + t * C, weight, eps, out + t * C, C) }
    }
}

@inline(__always)
private func rmsNormRow(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ eps: Float,
                        _ out: UnsafeMutablePointer<Float>, _ C: Int) {
    // Sum of squares in 32 float lanes (torch also sums squares rounded to float in float, in
    // a vectorised cascade); each lane sums C/32 terms, so the rounding error stays ~1e-7.
    var a0 = Float8(repeating: 0), a1 = a0, a2 = a0, a3 = a0
    var i = 0
    while i + 32 <= C {
        let v0 = loadFloat8(x + i), v1 = loadFloat8(x + i + 8)
        let v2 = loadFloat8(x + i + 16), v3 = loadFloat8(x + i + 24)
        a0 += v0 * v0; a1 += v1 * v1; a2 += v2 * v2; a3 += v3 * v3
        i += 32
    }
    var sum = ((a0 + a1) + (a2 + a3)).sum()
    while i < C { sum += x[i] * x[i]; i += 1 }
    let r = 1 / (sum / Float(C) + eps).squareRoot()
    i = 0
    while i + 8 <= C {
        storeFloat8(loadFloat8(w + i) * (loadFloat8(x + i) * r), out + i)
        i += 8
    }
    while i < C { out[i] = w[i] * (x[i] * r); i += 1 }
}

/// The naive Double reference of `rmsNorm`. x: [T, C]; weight: [C]; returns [T, C].
public func rmsNormReference(x: [Double], weight: [Double], eps: Double, T: Int, C: Int)
    -> [Double] {
    var out = [Double](repeating: 0, count: T * C)
    for t in 0..<T {
        var ss = 0.0
        for c in 0..<C { ss += x[t * C + c] * x[t * C + c] }
        let r = 1 / (ss / Double(C) + eps).squareRoot()
        for c in 0..<C { out[t * C + c] = weight[c] * (x[t * C + c] * r) }
    }
    return out
}
