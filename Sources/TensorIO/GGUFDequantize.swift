import Dispatch

// Dequantisation of ggml block formats, bit-exact to gguf-py's numpy `dequantize`
// (gguf-py/gguf/quants.py): the same float32 operations in the same order, each rounded
// separately (Swift does not contract a*b+c into a fused multiply-add). Block layouts follow
// ggml-common.h. Rows of blocks are independent, so large tensors split across threads.

@inline(__always) private func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self).littleEndian))
}

func ggmlDequantize(type: GGMLType, _ src: UnsafeRawBufferPointer,
                    into out: UnsafeMutableBufferPointer<Float>) throws {
    let n = out.count
    guard n > 0, let s = src.baseAddress, let o = out.baseAddress else { return }
    switch type {
    case .F32:
        for i in 0..<n { o[i] = Float(bitPattern: s.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian) }
        return
    case .F64:
        for i in 0..<n { o[i] = Float(Double(bitPattern: s.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian)) }
        return
    case .F16:
        for i in 0..<n { o[i] = half(s, 2 * i) }
        return
    case .BF16:
        for i in 0..<n {
            o[i] = Float(bitPattern: UInt32(s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16)
        }
        return
    default:
        break
    }
    let blocks = n / type.blockSize
    let kernel: (UnsafeRawPointer, UnsafeMutablePointer<Float>) -> Void
    switch type {
    case .Q8_0: kernel = dequantQ8_0
    case .Q4_0: kernel = dequantQ4_0
    case .Q4_1: kernel = dequantQ4_1
    case .Q5_0: kernel = dequantQ5_0
    case .Q5_1: kernel = dequantQ5_1
    case .Q4_K: kernel = dequantQ4_K
    case .Q5_K: kernel = dequantQ5_K
    case .Q6_K: kernel = dequantQ6_K
    default:
        throw TensorIOError.badData("cannot dequantize type \(type.name)")
    }
    let bs = type.blockSize, ts = type.typeSize
    let chunks = blocks >= 4096 ? 8 : 1
    let per = (blocks + chunks - 1) / chunks
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        for b in (c * per)..<min(blocks, (c + 1) * per) {
            kernel(s + b * ts, o + b * bs)
        }
    }
}

/// d: f16, qs: int8[32]; x = q · d.
private func dequantQ8_0(_ b: UnsafeRawPointer, _ o: UnsafeMutablePointer<Float>) {
    let d = half(b, 0)
    let q = (b + 2).assumingMemoryBound(to: Int8.self)
    for i in 0..<32 { o[i] = Float(q[i]) * d }
}

/// d: f16, qs: u8[16] (low nibbles are elements 0..15, high 16..31); x = d · (q − 8).
private func dequantQ4_0(_ b: UnsafeRawPointer, _ o: UnsafeMutablePointer<Float>) {
    let d = half(b, 0)
    let q = (b + 2).assumingMemoryBound(to: UInt8.self)
    for i in 0..<16 {
        o[i] = d * Float(Int(q[i] & 0x0F) - 8)
        o[i + 16] = d * Float(Int(q[i] >> 4) - 8)
    }
}

/// d, m: f16, qs: u8[16]; x = (d · q) + m.
private func dequantQ4_1(_ b: UnsafeRawPointer, _ o: UnsafeMutablePointer<Float>) {
    let d = half(b, 0), m = half(b, 2)
    let q = (b + 4).assumingMemoryBound(to: UInt8.self)
    for i in 0..<16 {
        let lo = d * Float(q[i] & 0x0F), hi = d * Float(q[i] >> 4)
        o[i] = lo + m
        o[i + 16] = hi + m
    }
}

/// d: f16, qh: u32 (fifth bits), qs: u8[16]; x = d · ((low | high << 4) − 16).
private func dequantQ5_0(_ b: UnsafeRawPointer, _ o: UnsafeMutablePointer<Float>) {
    let d = half(b, 0)
    let qh = b.loadUnaligned(fromByteOffset: 2, as: UInt32.self).littleEndian
    let q = (b + 6).assumingMemoryBound(to: UInt8.self)
    for i in 0..<16 {
        let lo = Int(q[i] & 0x0F) | Int((qh >> UInt32(i)) & 1) << 4
        let hi = Int(q[i] >> 4) | Int((qh >> UInt32(i + 16)) & 1) << 4
        o[i] = d * Float(lo - 16)
        o[i + 16] = d * Float(hi - 16)
    }
}

/// d, m: f16, qh: u32, qs: u8[16]; x = (d · q) + m.
private func dequantQ5_1(_ b: UnsafeRawPointer, _ o: UnsafeMutablePointer<Float>) {
    let d = half(b, 0), m = half(b, 2)
    let qh = b.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
    let q = (b + 8).assumingMemoryBound(to: UInt8.self)
    for i in 0..<16 {
        let lo = Int(q[i] & 0x0F) | Int((qh >> UInt32(i)) & 1) << 4
        let hi = Int(q[i] >> 4) | Int((qh >> UInt32(i + 16)) & 1) << 4
        let a = d * Float(lo), c = d * Float(hi)
        o[i] = a + m
        o[i + 16] = c + m
    }
}

/// The eight 6-bit scales and minima of a Q4_K/Q5_K block, packed in 12 bytes.
@inline(__always) private func scaleMin(_ s: UnsafePointer<UInt8>, _ j: Int) -> (Float, Float) {
    if j < 4 { return (Float(s[j] & 63), Float(s[j + 4] & 63)) }
    let sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30)
    let mn = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30)
    return (Float(sc), Float(mn))
}

/// d, dmin: f16, scales: u8[12], qs: u8[128]; sub-block j of 32: x = (d·sc_j) · q − (dmin·m_j).
private func dequantQ4_K(_ b: UnsafeRawPointer, _ o: UnsafeMutablePointer<Float>) {
    let d = half(b, 0), dmin = half(b, 2)
    let scales = (b + 4).assumingMemoryBound(to: UInt8.self)
    let qs = (b + 16).assumingMemoryBound(to: UInt8.self)
    for j in 0..<8 {
        let (sc, mn) = scaleMin(scales, j)
        let dj = d * sc, mj = dmin * mn
        let chunk = qs + (j / 2) * 32, shift = UInt8(4 * (j % 2))
        for i in 0..<32 { o[j * 32 + i] = dj * Float((chunk[i] >> shift) & 0x0F) - mj }
    }
}

/// d, dmin: f16, scales: u8[12], qh: u8[32], qs: u8[128]; as Q4_K with a fifth bit from qh.
private func dequantQ5_K(_ b: UnsafeRawPointer, _ o: UnsafeMutablePointer<Float>) {
    let d = half(b, 0), dmin = half(b, 2)
    let scales = (b + 4).assumingMemoryBound(to: UInt8.self)
    let qh = (b + 16).assumingMemoryBound(to: UInt8.self)
    let qs = (b + 48).assumingMemoryBound(to: UInt8.self)
    for j in 0..<8 {
        let (sc, mn) = scaleMin(scales, j)
        let dj = d * sc, mj = dmin * mn
        let chunk = qs + (j / 2) * 32, shift = UInt8(4 * (j % 2))
        for i in 0..<32 {
            let q = ((chunk[i] >> shift) & 0x0F) | (((qh[i] >> UInt8(j)) & 1) << 4)
            o[j * 32 + i] = dj * Float(q) - mj
        }
    }
}

/// ql: u8[128], qh: u8[64], scales: i8[16], d: f16; 16 groups of 16: x = (d·s_g) · (q − 32).
private func dequantQ6_K(_ b: UnsafeRawPointer, _ o: UnsafeMutablePointer<Float>) {
    let ql = b.assumingMemoryBound(to: UInt8.self)
    let qh = (b + 128).assumingMemoryBound(to: UInt8.self)
    let sc = (b + 192).assumingMemoryBound(to: Int8.self)
    let d = half(b, 208)
    for e in 0..<256 {
        let g = e / 64, i = e % 64
        let low = (ql[(g / 2) * 64 + i] >> UInt8(4 * (g % 2))) & 0x0F
        let h = e / 128, t = (e % 128) / 32
        let high = (qh[h * 32 + e % 32] >> UInt8(2 * t)) & 3
        let q = Int(low | (high << 4)) - 32
        o[e] = (d * Float(sc[e / 16])) * Float(q)
    }
}
