// Vectorised exp for the elementwise kernels (softmax, SiLU, cross-entropy), since Foundation's
// scalar exp would dominate their cost. Cephes-style: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in
// two so that n·ln2 is exact), a polynomial for e^r, and 2ⁿ assembled in the exponent bits.
// Accuracy against correctly rounded exp (tested): Float ≤ 2 ulp, Double ≤ 2 ulp.

typealias Float8 = SIMD8<Float>
typealias Double4 = SIMD4<Double>

/// Lanewise maximum (the stdlib's generic `pointwiseMax` is an out-of-line call).
@inline(__always)
func maxLanes(_ a: Float8, _ b: Float8) -> Float8 {
    a.replacing(with: b, where: b .> a)
}

@inline(__always)
func loadFloat8(_ p: UnsafePointer<Float>) -> Float8 {
    UnsafeRawPointer(p).loadUnaligned(as: Float8.self)
}

@inline(__always)
func storeFloat8(_ v: Float8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Float8.self)
}

/// e^x lanewise in Float. Overflows to +inf above ln(FLT_MAX); flushes to 0 below −86.9 (where
/// torch returns values under 1.8e-38: an absolute difference no caller can see).
/// Only plain arithmetic, compares, blends and bit casts: Swift's generic SIMD conversions,
/// `rounded` and `pointwiseMin` do not inline into vector code, so n = round(x·log2 e) comes from
/// the 1.5·2²³ magic-number trick, and out-of-range lanes are not clamped but overwritten at the
/// end (their intermediate garbage is harmless).
@_transparent  // @inline(__always) left it out of line in the softmax loop
func exp8(_ x: Float8) -> Float8 {
    let hi: Float = 88.72283, lo: Float = -86.9
    let xc = x
    let magic = Float8(repeating: 12582912)  // 1.5·2²³: adding it rounds to an integer
    let shifted = xc * 1.44269504088896341 + magic
    let n = shifted - magic
    // Cody–Waite: ln2 = 0.693359375 (exact in 9 bits) − 2.12194440e-4.
    var r = xc - n * 0.693359375
    r = r + n * 2.12194440e-4
    var p = Float8(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = (p * r * r + r) + 1
    // The low mantissa bits of `shifted` hold n (two's complement). 2ⁿ itself overflows at
    // n = 128 (x near ln FLT_MAX), so build 2ⁿ⁻¹ (exponent field n + 126 ≥ 1 since n ≥ −125)
    // and double p, both exact.
    let ni = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
    let scale = unsafeBitCast((ni &+ 126) &<< 23, to: Float8.self)
    var y = (p + p) * scale
    y.replace(with: .infinity, where: x .> hi)
    y.replace(with: 0, where: x .< lo)
    y.replace(with: x, where: x .!= x)  // NaN stays NaN
    return y
}

/// e^x lanewise in Double. Below −708 (2ⁿ would leave the normal range) the result is 0; callers
/// only exponentiate non-positive shifted logits, where such terms cannot change a sum ≥ 1.
@_transparent
func exp4(_ x: Double4) -> Double4 {
    let lo = -708.0, hi = 709.0
    let xc = x
    let magic = Double4(repeating: 6755399441055744)  // 1.5·2⁵²
    let shifted = xc * 1.4426950408889634 + magic
    let n = shifted - magic
    // ln2 split: the high part has 32 significant bits, so n·ln2hi is exact for |n| < 2²⁰.
    var r = xc - n * 6.93147180369123816490e-01
    r = r - n * 1.90821492927058770002e-10
    // Taylor series to r¹³/13!: truncation error < 2e-17 for |r| ≤ ln2/2.
    var p = Double4(repeating: 1.0 / 6227020800.0)
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = (p * r * r + r) + 1
    let ni = unsafeBitCast(shifted, to: SIMD4<Int64>.self) &- 0x4338_0000_0000_0000
    let scale = unsafeBitCast((ni &+ 1023) &<< 52, to: Double4.self)
    var y = p * scale
    y.replace(with: .infinity, where: x .> hi)
    y.replace(with: 0, where: x .< lo)
    y.replace(with: x, where: x .!= x)
    return y
}

/// e^x for a buffer, for tests of the vector paths against Foundation.
func expFloats(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count {
        storeFloat8(exp8(loadFloat8(x + i)), y + i)
        i += 8
    }
    if i < count {
        var v = Float8(repeating: 0)
        for j in 0..<(count - i) { v[j] = x[i + j] }
        let e = exp8(v)
        for j in 0..<(count - i) { y[i + j] = e[j] }
    }
}

func expDoubles(_ x: UnsafePointer<Double>, _ y: UnsafeMutablePointer<Double>, count: Int) {
    for i in stride(from: 0, to: count, by: 4) {
        var v = Double4(repeating: 0)
        for j in 0..<min(4, count - i) { v[j] = x[i + j] }
        let e = exp4(v)
        for j in 0..<min(4, count - i) { y[i + j] = e[j] }
    }
}
