// RMSNorm as transformers' LlamaRMSNorm computes it in float32:
//   out = weight · (x · rsqrt(mean(x²) + eps))
// with the two products rounded in that order.
//
// Dimensions: T tokens, C hidden.
//   x: [T, C]; weight: [C]; out: [T, C]

/// out[t, :] = weight · (x[t, :] · 1/sqrt(mean(x[t, :]²) + eps)). out may alias x. With `rstd`
/// ([T]), each row's 1/sqrt(mean(x²) + eps) is recorded for the backward.
public func rmsNorm(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
                    out: UnsafeMutablePointer<Float>, T: Int, C: Int, rstd: UnsafeMutablePointer<Float>? = nil) {
    precondition(T >= 0 && C >= 0, "negative size in rmsNorm: T \(T) C \(C)")
    if T == 0 || C == 0 { return }
    parallelChunks(T, grain: max(1, 32_768 / C)) { rows in
        for t in rows {
            let r = rmsNormRow(x + t * C, weight, eps, out + t * C, C)
            rstd?[t] = r
        }
    }
}

/// The backward of `rmsNorm`, from the forward's input x and recorded rstd r. With n = x·r and
/// out = w·n (per row, C terms):
///   dw[c] += Σ_t dout[t, c] · n[t, c]
///   dx[t, c] += r · (w[c]·dout[t, c] − n[t, c] · mean_j(w[j]·dout[t, j]·n[t, j]))
/// x, dout, dx: [T, C]; weight, dweight: [C]; rstd: [T]. dx may not alias dout.
public func rmsNormBackward(dout: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                            rstd: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                            dweight: UnsafeMutablePointer<Float>, T: Int, C: Int) {
    precondition(T >= 0 && C >= 0, "negative size in rmsNormBackward: T \(T) C \(C)")
    if T == 0 || C == 0 { return }
    parallelChunks(T, grain: max(1, 32_768 / C)) { rows in
        for t in rows {
            let xr = x + t * C, g = dout + t * C, d = dx + t * C, r = rstd[t]
            var dot: Float = 0  // Σ_j w_j·dout_j·x_j
            for j in 0..<C { dot += weight[j] * g[j] * xr[j] }
            let k = dot * r * r / Float(C)
            for j in 0..<C { d[j] += r * (weight[j] * g[j] - xr[j] * k) }
        }
    }
    // dweight over all rows in one thread: T·C products, small beside the block's products.
    for t in 0..<T {
        let xr = x + t * C, g = dout + t * C, r = rstd[t]
        for j in 0..<C { dweight[j] += g[j] * (xr[j] * r) }
    }
}

@inline(__always)
private func rmsNormRow(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ eps: Float,
                        _ out: UnsafeMutablePointer<Float>, _ C: Int) -> Float {
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
    return r
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

/// The naive Double reference of `rmsNormBackward`: returns (dx [T, C], dweight [C]) for upstream
/// gradient dout [T, C].
public func rmsNormBackwardReference(dout: [Double], x: [Double], weight: [Double], eps: Double, T: Int, C: Int)
    -> (dx: [Double], dweight: [Double]) {
    var dx = [Double](repeating: 0, count: T * C), dw = [Double](repeating: 0, count: C)
    for t in 0..<T {
        var ss = 0.0
        for c in 0..<C { ss += x[t * C + c] * x[t * C + c] }
        let r = 1 / (ss / Double(C) + eps).squareRoot()
        var dot = 0.0
        for c in 0..<C { dot += weight[c] * dout[t * C + c] * x[t * C + c] }
        for c in 0..<C {
            dw[c] += dout[t * C + c] * x[t * C + c] * r
            dx[t * C + c] = r * weight[c] * dout[t * C + c] - r * r * r * x[t * C + c] * dot / Double(C)
        }
    }
    return (dx, dw)
}
