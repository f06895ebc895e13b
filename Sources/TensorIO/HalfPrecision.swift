// Element conversions between the file dtypes and Float/Double/Int.
//
// Rounding matches what PyTorch's CPU tensor conversions write, so that files agree byte for byte
// with `tensor.to(dtype)`: F32 → BF16 rounds to nearest even and turns every NaN into 0xFFFF (ATen's
// vectorised `cvtfp32_bf16`, which every tensor conversion uses; only the 0-dim scalar path gives
// 0x7FC0); F32 → F16 is the hardware conversion (F16C `vcvtps2ph`: nearest even, NaN keeps its
// sign and top payload bits), as ATen's is. Double → F16/BF16 goes through Float, as in PyTorch.
// Loads are unaligned because a tensor in a file that we did not pad need not be aligned.

/// The Float value of a bfloat16 bit pattern (exact: bfloat16 is the top half of a float).
@inline(__always)
public func bf16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// Rounds to the nearest bfloat16, ties to even; every NaN becomes 0xFFFF (as ATen writes it).
@inline(__always)
public func floatToBF16(_ x: Float) -> UInt16 {
    if x.isNaN { return 0xFFFF }
    let u = x.bitPattern
    let bias = ((u >> 16) & 1) &+ 0x7FFF
    return UInt16(truncatingIfNeeded: (u &+ bias) >> 16)
}

/// The Float value of an IEEE half bit pattern (F16C `vcvtph2ps` with -target-cpu haswell).
@inline(__always)
public func f16ToFloat(_ bits: UInt16) -> Float {
    Float(Float16(bitPattern: bits))
}

/// Rounds to the nearest IEEE half, ties to even; NaN stays NaN with its sign and top payload bits.
@inline(__always)
public func floatToF16(_ x: Float) -> UInt16 {
    Float16(x).bitPattern
}

/// Converts `src` (tightly packed elements of `dtype`, any alignment) to Float.
/// Floating-point dtypes only; F64 is rounded to nearest. `dst.count` must equal the element count.
public func convertToFloat(_ src: UnsafeRawBufferPointer, dtype: DType,
                           into dst: UnsafeMutableBufferPointer<Float>) throws {
    guard src.count == dst.count * dtype.size else {
        throw TensorIOError.badData(
            "convertToFloat: \(src.count) bytes of \(dtype) do not hold \(dst.count) elements")
    }
    guard let s = src.baseAddress, let d = dst.baseAddress else { return }
    let n = dst.count
    switch dtype {
    case .F32:
        d.withMemoryRebound(to: UInt8.self, capacity: n * 4) {
            $0.update(from: s.assumingMemoryBound(to: UInt8.self), count: n * 4)
        }
    case .F16:
        for i in 0..<n { d[i] = Float(Float16(bitPattern: s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
    case .BF16:
        for i in 0..<n {
            d[i] = Float(bitPattern: UInt32(s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
        }
    case .F64:
        for i in 0..<n { d[i] = Float(s.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
    default:
        throw TensorIOError.badData("cannot read \(dtype) elements as floating-point numbers")
    }
}

/// Converts `src` (floating-point dtype) to Double; exact for every source dtype.
public func convertToDouble(_ src: UnsafeRawBufferPointer, dtype: DType,
                            into dst: UnsafeMutableBufferPointer<Double>) throws {
    guard src.count == dst.count * dtype.size else {
        throw TensorIOError.badData(
            "convertToDouble: \(src.count) bytes of \(dtype) do not hold \(dst.count) elements")
    }
    guard let s = src.baseAddress, let d = dst.baseAddress else { return }
    let n = dst.count
    switch dtype {
    case .F64:
        for i in 0..<n { d[i] = s.loadUnaligned(fromByteOffset: 8 * i, as: Double.self) }
    case .F32:
        for i in 0..<n { d[i] = Double(s.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)) }
    case .F16:
        for i in 0..<n {
            d[i] = Double(Float(Float16(bitPattern: s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
        }
    case .BF16:
        for i in 0..<n {
            d[i] = Double(bf16ToFloat(s.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        }
    default:
        throw TensorIOError.badData("cannot read \(dtype) elements as floating-point numbers")
    }
}

/// Converts `src` (integer or BOOL dtype) to Int. BOOL bytes must be 0 or 1, as PyTorch writes.
public func convertToInt(_ src: UnsafeRawBufferPointer, dtype: DType,
                         into dst: UnsafeMutableBufferPointer<Int>) throws {
    guard src.count == dst.count * dtype.size else {
        throw TensorIOError.badData(
            "convertToInt: \(src.count) bytes of \(dtype) do not hold \(dst.count) elements")
    }
    guard let s = src.baseAddress, let d = dst.baseAddress else { return }
    let n = dst.count
    switch dtype {
    case .I64: for i in 0..<n { d[i] = Int(s.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
    case .I32: for i in 0..<n { d[i] = Int(s.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
    case .I16: for i in 0..<n { d[i] = Int(s.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) }
    case .I8: for i in 0..<n { d[i] = Int(s.load(fromByteOffset: i, as: Int8.self)) }
    case .U8: for i in 0..<n { d[i] = Int(s.load(fromByteOffset: i, as: UInt8.self)) }
    case .BOOL:
        for i in 0..<n {
            let b = s.load(fromByteOffset: i, as: UInt8.self)
            guard b <= 1 else {
                throw TensorIOError.badData("BOOL element \(i) has byte value \(b), not 0 or 1")
            }
            d[i] = Int(b)
        }
    default:
        throw TensorIOError.badData("cannot read \(dtype) elements as integers")
    }
}

/// Encodes Floats as `dtype` (F32, F16, BF16, F64) into `dst` (count × dtype.size bytes).
public func encodeFloats(_ src: UnsafeBufferPointer<Float>, dtype: DType,
                  into dst: UnsafeMutableRawBufferPointer) {
    guard let d = dst.baseAddress, let s = src.baseAddress else { return }
    let n = src.count
    switch dtype {
    case .F32:
        d.copyMemory(from: s, byteCount: n * 4)
    case .F16:
        for i in 0..<n { d.storeBytes(of: floatToF16(s[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
    case .BF16:
        for i in 0..<n { d.storeBytes(of: floatToBF16(s[i]), toByteOffset: 2 * i, as: UInt16.self) }
    case .F64:
        for i in 0..<n { d.storeBytes(of: Double(s[i]), toByteOffset: 8 * i, as: Double.self) }
    default:
        break  // the callers check the dtype first
    }
}

/// Encodes Doubles as `dtype`. F16 and BF16 go through Float, as PyTorch's casts do
/// (c10::Half and c10::BFloat16 are constructed from float), so the results match `.to(dtype)`.
func encodeDoubles(_ src: UnsafeBufferPointer<Double>, dtype: DType,
                   into dst: UnsafeMutableRawBufferPointer) {
    guard let d = dst.baseAddress, let s = src.baseAddress else { return }
    let n = src.count
    switch dtype {
    case .F64:
        d.copyMemory(from: s, byteCount: n * 8)
    case .F32:
        for i in 0..<n { d.storeBytes(of: Float(s[i]), toByteOffset: 4 * i, as: Float.self) }
    case .F16:
        for i in 0..<n { d.storeBytes(of: floatToF16(Float(s[i])), toByteOffset: 2 * i, as: UInt16.self) }
    case .BF16:
        for i in 0..<n { d.storeBytes(of: floatToBF16(Float(s[i])), toByteOffset: 2 * i, as: UInt16.self) }
    default:
        break
    }
}

/// The index of the first value that does not fit in the integer `dtype` (BOOL: 0 or 1).
func firstValueOutOfRange(_ values: [Int], dtype: DType) -> Int? {
    let range: ClosedRange<Int>
    switch dtype {
    case .I64: return nil
    case .I32: range = Int(Int32.min)...Int(Int32.max)
    case .I16: range = Int(Int16.min)...Int(Int16.max)
    case .I8: range = Int(Int8.min)...Int(Int8.max)
    case .U8: range = 0...255
    case .BOOL: range = 0...1
    default: return nil
    }
    return values.firstIndex { !range.contains($0) }
}

/// Encodes Ints as an integer `dtype`, checking that each value fits; returns the index of the
/// first value that does not fit, or nil.
func encodeIntegers(_ src: UnsafeBufferPointer<Int>, dtype: DType,
                    into dst: UnsafeMutableRawBufferPointer) -> Int? {
    guard let d = dst.baseAddress else { return nil }
    func store<T: FixedWidthInteger>(_: T.Type) -> Int? {
        for (i, v) in src.enumerated() {
            guard let t = T(exactly: v) else { return i }
            d.storeBytes(of: t.littleEndian, toByteOffset: i * MemoryLayout<T>.size, as: T.self)
        }
        return nil
    }
    switch dtype {
    case .I64: return store(Int64.self)
    case .I32: return store(Int32.self)
    case .I16: return store(Int16.self)
    case .I8: return store(Int8.self)
    case .U8: return store(UInt8.self)
    case .BOOL:
        for (i, v) in src.enumerated() {
            guard v == 0 || v == 1 else { return i }
            d.storeBytes(of: UInt8(v), toByteOffset: i, as: UInt8.self)
        }
        return nil
    default:
        return 0
    }
}
