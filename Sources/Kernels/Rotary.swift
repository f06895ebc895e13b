// Rotary position embedding as transformers' LlamaRotaryEmbedding and apply_rotary_pos_emb compute
// it in float32 (modeling_llama.py, modeling_rope_utils.py `_compute_llama3_parameters`):
//   inv_freq[i] = 1 / θ^(float(2i)/D)                       (float32 tensor ops)
//   angle[p, i] = float(p) · inv_freq[i]                     (float32 product)
//   out[i]      = x[i]·cos[i] − x[i+D/2]·sin[i]              (rotate_half: first half / second half)
//   out[i+D/2]  = x[i+D/2]·cos[i] + x[i]·sin[i]
// Each product is rounded before the sum, as torch's separate mul and add do.
//
// Dimensions: T tokens, H heads, D head size, P positions in the table.
//   x: [T, H, D]; cos, sin: [P, D/2] (the second half of HF's cat(freqs, freqs) repeats the first)
import Foundation

/// LLaMA-3 frequency-dependent scaling (`rope_type: "llama3"`).
public struct Llama3RopeScaling: Sendable, Equatable {
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositionEmbeddings: Int

    public init(factor: Double, lowFreqFactor: Double, highFreqFactor: Double,
                originalMaxPositionEmbeddings: Int) {
        self.factor = factor
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }
}

public final class RotaryTable: @unchecked Sendable {
    public let headDim: Int
    public let maxPositions: Int
    /// The float32 inverse frequencies, [D/2], bit-identical to transformers' except where torch's
    /// vectorised powf is itself off by one ulp (we round the exact power).
    public let inverseFrequencies: [Float]
    private let cos: [Float]  // [P, D/2]
    private let sin: [Float]  // [P, D/2]

    public init(headDim D: Int, theta: Double, scaling: Llama3RopeScaling?, maxPositions: Int) {
        precondition(D > 0 && D % 2 == 0, "rotary head size must be even and positive, got \(D)")
        precondition(maxPositions >= 0, "negative maxPositions")
        headDim = D
        self.maxPositions = maxPositions
        let inv = rotaryInverseFrequencies(headDim: D, theta: theta, scaling: scaling)
        inverseFrequencies = inv
        let half = D / 2
        var c = [Float](repeating: 0, count: maxPositions * half), s = c
        // cos/sin of the float32 angle, correctly rounded (torch's Sleef u10 kernels agree but
        // for the rare case where they are one ulp off).
        for p in 0..<maxPositions {
            for i in 0..<half {
                let angle = Double(Float(p) * inv[i])
                c[p * half + i] = Float(Foundation.cos(angle))
                s[p * half + i] = Float(Foundation.sin(angle))
            }
        }
        cos = c
        sin = s
    }

    /// cos and sin of position p, [D/2] each (for tests and backward passes).
    public func cosSin(position p: Int) -> (cos: ArraySlice<Float>, sin: ArraySlice<Float>) {
        let half = headDim / 2
        return (cos[p * half..<(p + 1) * half], sin[p * half..<(p + 1) * half])
    }

    /// Rotates x: [T, H, D] in place, row t at position start + t.
    public func apply(_ x: UnsafeMutablePointer<Float>, T: Int, H: Int, start: Int = 0) {
        rotateAll(x, T: T, H: H, start: start, inverse: false)
    }

    /// The backward of `apply`, in place on the gradient dx: [T, H, D]. The rotation is
    /// orthogonal, so its backward is the rotation by the opposite angle:
    ///   dx[i] = dy[i]·cos[i] + dy[i+D/2]·sin[i];   dx[i+D/2] = dy[i+D/2]·cos[i] − dy[i]·sin[i]
    public func applyBackward(_ dx: UnsafeMutablePointer<Float>, T: Int, H: Int, start: Int = 0) {
        rotateAll(dx, T: T, H: H, start: start, inverse: true)
    }

    private func rotateAll(_ x: UnsafeMutablePointer<Float>, T: Int, H: Int, start: Int, inverse: Bool) {
        precondition(T >= 0 && H >= 0 && start >= 0, "negative size in rotary apply")
        precondition(start + T <= maxPositions,
                     "positions \(start)..<\(start + T) exceed the rotary table (\(maxPositions))")
        if T == 0 || H == 0 { return }
        let D = headDim, half = D / 2
        cos.withUnsafeBufferPointer { cp in
            sin.withUnsafeBufferPointer { sp in
                let cb = cp.baseAddress!, sb = sp.baseAddress!
                parallelChunks(T, grain: max(1, 65_536 / (H * D))) { rows in
                    for t in rows {
                        let c = cb + (start + t) * half, s = sb + (start + t) * half
                        for h in 0..<H { rotate(x + (t * H + h) * D, c, s, half, inverse) }
                    }
                }
            }
        }
    }
}

@inline(__always)
private func rotate(_ x: UnsafeMutablePointer<Float>, _ c: UnsafePointer<Float>,
                    _ s: UnsafePointer<Float>, _ half: Int, _ inverse: Bool) {
    // The inverse rotation negates sin (exactly), so the forward's arithmetic is unchanged.
    let y = x + half
    var i = 0
    while i + 8 <= half {
        let a = loadFloat8(x + i), b = loadFloat8(y + i)
        let cv = loadFloat8(c + i), sv = inverse ? -loadFloat8(s + i) : loadFloat8(s + i)
        storeFloat8(a * cv - b * sv, x + i)
        storeFloat8(b * cv + a * sv, y + i)
        i += 8
    }
    while i < half {
        let a = x[i], b = y[i], si = inverse ? -s[i] : s[i]
        let p = a * c[i], q = b * si
        let u = b * c[i], v = a * si
        x[i] = p - q
        y[i] = u + v
        i += 1
    }
}

/// transformers' float32 inverse frequencies, op by op: `1.0 / base ** (arange(0, D, 2).float() / D)`
/// and, for llama3, `_compute_llama3_parameters`, where `scalar / tensor` is torch's
/// `tensor.reciprocal() * scalar` and Python scalars enter float32 ops rounded to float.
public func rotaryInverseFrequencies(headDim D: Int, theta: Double, scaling: Llama3RopeScaling?)
    -> [Float] {
    let half = D / 2
    var inv = [Float](repeating: 0, count: half)
    for i in 0..<half {
        let e = Float(2 * i) / Float(D)
        inv[i] = 1 / Float(Foundation.pow(theta, Double(e)))
    }
    guard let sc = scaling else { return inv }
    let factor = Float(sc.factor), lowF = Float(sc.lowFreqFactor)
    let old = Double(sc.originalMaxPositionEmbeddings)
    // torch compares a float32 tensor with a Python float in float32: thresholds round to float.
    let lowWavelen = Float(old / sc.lowFreqFactor), highWavelen = Float(old / sc.highFreqFactor)
    let twoPi = Float(2 * Double.pi), oldF = Float(old)
    let span = Float(sc.highFreqFactor - sc.lowFreqFactor)
    for i in 0..<half {
        let f = inv[i]
        let wavelen = (1 / f) * twoPi
        let scaled = wavelen > lowWavelen ? f / factor : f
        let smooth = ((1 / wavelen) * oldF - lowF) / span
        let smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        let medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen)
        inv[i] = medium ? smoothed : scaled
    }
    return inv
}

/// The naive Double reference of `RotaryTable.apply` for the same float32 angles: x: [T, H, D]
/// at positions start..<start+T; returns [T, H, D].
public func rotaryReference(x: [Double], T: Int, H: Int, D: Int, inverseFrequencies inv: [Float],
                            start: Int = 0) -> [Double] {
    rotateReference(x, T: T, H: H, D: D, inverseFrequencies: inv, start: start, sign: 1)
}

/// The naive Double reference of `RotaryTable.applyBackward`: the transpose of the rotation, which
/// is the rotation by the opposite angle. dy: [T, H, D] at positions start..<start+T; returns dx.
public func rotaryBackwardReference(dy: [Double], T: Int, H: Int, D: Int, inverseFrequencies inv: [Float],
                                    start: Int = 0) -> [Double] {
    rotateReference(dy, T: T, H: H, D: D, inverseFrequencies: inv, start: start, sign: -1)
}

private func rotateReference(_ x: [Double], T: Int, H: Int, D: Int, inverseFrequencies inv: [Float], start: Int,
                             sign: Double) -> [Double] {
    var out = x
    let half = D / 2
    for t in 0..<T {
        for i in 0..<half {
            let angle = Double(Float(start + t) * inv[i])
            let c = Foundation.cos(angle), s = sign * Foundation.sin(angle)
            for h in 0..<H {
                let o = (t * H + h) * D
                out[o + i] = x[o + i] * c - x[o + i + half] * s
                out[o + i + half] = x[o + i + half] * c + x[o + i] * s
            }
        }
    }
    return out
}
