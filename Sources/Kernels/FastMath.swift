// Vectorised exp for the elementwise kernels (softmax, SiLU, cross-entropy), since Foundation's
// scalar exp would dominate their cost. Cephes-style: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in
// two so that n·ln2 is exact), a polynomial for e^r, and 2ⁿ assembled in the exponent bits.
// Accuracy against correctly rounded exp (tested): Float ≤ 2 ulp, Double ≤ 2 ulp.

typealias Float8 = SIMD8<Float>
typealias Double4 = SIMD4<Double>

@inline(__always)
func loadFloat8(_ p: UnsafePointer<Float>) -> Float8 {
    UnsafeRawPointer(p).loadUnaligned(as: Float8.self)
}

@inline(__always)
func storeFloat8(_ v: Float8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Float8.self)
}

/// e^x lanewise in Float. Overflows to +inf above ln(FLT_MAX); flushes to 0 below ln(FLT_MIN)
/// (where torch would return a subnormal: an absolute difference under 1.2e-38).
@inline(__always)
func exp8(_ x: Float8) -> Float8 {
    let hi: Float = 88.72283, lo: Float = -87.33654
    let xc = x.clamped(lowerBound: Float8(repeating: lo), upperBound: Float8(repeating: hi))
    let n = (xc * 1.44269504088896341).rounded(.toNearestOrEven)
    // Cody–Waite: ln2 = 0.693359375 (exact in 9 bits) − 2.12194440e-4.
    var r = xc.addingProduct(n, Float8(repeating: -0.693359375))
    r = r.addingProduct(n, Float8(repeating: 2.12194440e-4))
    var p = Float8(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = (p * r * r + r) + 1
    let bits = (SIMD8<Int32>(n) &+ 127) &<< 23
    var y = p * unsafeBitCast(bits, to: Float8.self)
    y.replace(with: .infinity, where: x .> hi)
    y.replace(with: 0, where: x .< lo)
    y.replace(with: x, where: x .!= x)  // NaN stays NaN
    return y
}

/// e^x lanewise in Double. Below −708 (2ⁿ would leave the normal range) the result is 0; callers
/// only exponentiate non-positive shifted logits, where such terms cannot change a sum ≥ 1.
@inline(__always)
func exp4(_ x: Double4) -> Double4 {
    let lo = -708.0, hi = 709.0
    let xc = x.clamped(lowerBound: Double4(repeating: lo), upperBound: Double4(repeating: hi))
    let n = (xc * 1.4426950408889634).rounded(.toNearestOrEven)
    // ln2 split: hi part has 32 significant bits, so n·ln2hi is exact for |n| < 2²⁰.
    var r = xc.addingProduct(n, Double4(repeating: -6.93147180369123816490e-01))
    r = r.addingProduct(n, Double4(repeating: -1.90821492927058770002e-10))
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
    let bits = (SIMD4<Int64>(n) &+ 1023) &<< 52
    var y = p * unsafeBitCast(bits, to: Double4.self)
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
