// Elementwise kernels of the decoder: the SwiGLU gate of LlamaMLP, bias and residual additions.
//
// Dimensions: T tokens, F features (MLP width or any linear output).
//   gate, up, out: [count] (typically [T, F]); y: [T, F]; bias: [F]; x: [count]
import Foundation

/// out = silu(gate) · up, with silu(g) = g / (1 + e^(−g)) as torch's float32 CPU kernel computes
/// it (divide, not multiply by a sigmoid). out may alias gate or up.
public func swiglu(gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                   out: UnsafeMutablePointer<Float>, count: Int) {
    precondition(count >= 0, "negative count in swiglu")
    parallelChunks(count, grain: 65_536) { range in
        var i = range.lowerBound
        while i + 8 <= range.upperBound {
            let g = loadFloat8(gate + i)
            storeFloat8(g / (1 + exp8(-g)) * loadFloat8(up + i), out + i)
            i += 8
        }
        if i < range.upperBound {
            let n = range.upperBound - i
            var g = Float8(repeating: 0), u = g
            for j in 0..<n { g[j] = gate[i + j]; u[j] = up[i + j] }
            let s = g / (1 + exp8(-g)) * u
            for j in 0..<n { out[i + j] = s[j] }
        }
    }
}

/// The backward of `swiglu`. With σ = 1/(1 + e^(−g)), silu(g) = g·σ and silu'(g) = σ·(1 + g·(1 − σ)):
///   dgate += dout · up · σ·(1 + g·(1 − σ));   dup += dout · silu(g)
/// gate, up: the forward's inputs; dout, dgate, dup: [count].
public func swigluBackward(dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                           dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>, count: Int) {
    precondition(count >= 0, "negative count in swigluBackward")
    parallelChunks(count, grain: 65_536) { range in
        var i = range.lowerBound
        let one = Float8(repeating: 1)
        while i + 8 <= range.upperBound {
            let g = loadFloat8(gate + i), u = loadFloat8(up + i), d = loadFloat8(dout + i)
            let s = one / (one + exp8(-g))
            storeFloat8(loadFloat8(dgate + i) + d * u * s * (one + g * (one - s)), dgate + i)
            storeFloat8(loadFloat8(dup + i) + d * g * s, dup + i)
            i += 8
        }
        while i < range.upperBound {
            let g = gate[i], s = 1 / (1 + Foundation.exp(-g))
            dgate[i] += dout[i] * up[i] * s * (1 + g * (1 - s))
            dup[i] += dout[i] * g * s
            i += 1
        }
    }
}

/// The naive Double reference of `swigluBackward`: (dgate, dup).
public func swigluBackwardReference(dout: [Double], gate: [Double], up: [Double]) -> (dgate: [Double], dup: [Double]) {
    var dg = [Double](repeating: 0, count: gate.count), du = dg
    for i in gate.indices {
        let s = 1 / (1 + Foundation.exp(-gate[i]))
        dg[i] = dout[i] * up[i] * s * (1 + gate[i] * (1 - s))
        du[i] = dout[i] * gate[i] * s
    }
    return (dg, du)
}

/// The naive Double reference of `swiglu`.
public func swigluReference(gate: [Double], up: [Double]) -> [Double] {
    zip(gate, up).map { g, u in g / (1 + Foundation.exp(-g)) * u }
}

/// y[t, :] += bias for every row t. y: [T, F]; bias: [F]
public func addBias(_ y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, T: Int, F: Int) {
    precondition(T >= 0 && F >= 0, "negative size in addBias")
    if T == 0 || F == 0 { return }
    parallelChunks(T, grain: max(1, 65_536 / F)) { rows in
        for t in rows {
            let row = y + t * F
            for f in 0..<F { row[f] += bias[f] }
        }
    }
}

/// The backward of `addBias`: dbias[f] += Σ_t dy[t, f]. dy: [T, F]; dbias: [F]
public func addBiasBackward(dy: UnsafePointer<Float>, dbias: UnsafeMutablePointer<Float>, T: Int, F: Int) {
    precondition(T >= 0 && F >= 0, "negative size in addBiasBackward")
    for t in 0..<T {
        let row = dy + t * F
        for f in 0..<F { dbias[f] += row[f] }
    }
}

/// The residual connection y += x. y, x: [count]
public func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    precondition(count >= 0, "negative count in add")
    parallelChunks(count, grain: 65_536) { range in
        for i in range { y[i] += x[i] }
    }
}
