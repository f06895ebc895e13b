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

/// The residual connection y += x. y, x: [count]
public func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    precondition(count >= 0, "negative count in add")
    parallelChunks(count, grain: 65_536) { range in
        for i in range { y[i] += x[i] }
    }
}
