#if canImport(Glibc)
import Glibc
#endif

// The GGUF container (ggml docs/gguf.md; versions 2 and 3, little-endian): magic "GGUF",
// version, tensor count, key-value count, the key-values, the tensor infos, then the tensor data
// from the next multiple of `general.alignment` (default 32). Every count is checked against the
// bytes that remain before anything is allocated, as ggml's gguf.cpp does.

/// ggml tensor types with their block geometry (ggml.h `enum ggml_type`).
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9
    case Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15
    case IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21
    case IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29
    case BF16 = 30, TQ1_0 = 34, TQ2_0 = 35

    /// (elements per block, bytes per block)
    private var geometry: (Int, Int) {
        switch self {
        case .F32: return (1, 4)
        case .F16, .BF16: return (1, 2)
        case .Q4_0: return (32, 18)
        case .Q4_1: return (32, 20)
        case .Q5_0: return (32, 22)
        case .Q5_1: return (32, 24)
        case .Q8_0: return (32, 34)
        case .Q8_1: return (32, 36)
        case .Q2_K: return (256, 84)
        case .Q3_K: return (256, 110)
        case .Q4_K: return (256, 144)
        case .Q5_K: return (256, 176)
        case .Q6_K: return (256, 210)
        case .Q8_K: return (256, 292)
        case .IQ2_XXS: return (256, 66)
        case .IQ2_XS: return (256, 74)
        case .IQ3_XXS: return (256, 98)
        case .IQ1_S: return (256, 50)
        case .IQ4_NL: return (32, 18)
        case .IQ3_S: return (256, 110)
        case .IQ2_S: return (256, 82)
        case .IQ4_XS: return (256, 136)
        case .I8: return (1, 1)
        case .I16: return (1, 2)
        case .I32: return (1, 4)
        case .I64, .F64: return (1, 8)
        case .IQ1_M: return (256, 56)
        case .TQ1_0: return (256, 54)
        case .TQ2_0: return (256, 66)
        }
    }

    public var blockSize: Int { geometry.0 }
    public var typeSize: Int { geometry.1 }
    public var name: String { "\(self)" }

    public var canDequantize: Bool {
        switch self {
        case .F32, .F16, .BF16, .F64, .Q8_0, .Q4_0, .Q4_1, .Q5_0, .Q5_1, .Q4_K, .Q5_K, .Q6_K:
            return true
        default: return false
        }
    }
}

public struct GGUFTensorInfo: Sendable {
    public var name: String
    /// ggml order: ne[0] (contiguous) first.
    public var dims: [Int]
    public var type: GGMLType
    /// Relative to the data section.
    public var offset: Int
    public var byteCount: Int
    public var elementCount: Int
    /// Row-major, as numpy and Hugging Face see it.
    public var shape: [Int] { dims.reversed() }
}

/// A GGUF file, memory-mapped and validated in full on open.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    public let metadataKeys: [String]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    private let region: ByteRegion
    private let dataStart: Int
    private let index: [String: Int]

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw TensorIOError.missing("\(path): no such file") }
            throw TensorIOError.io("\(path): cannot open: \(errnoText())")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TensorIOError.io("\(path): cannot stat: \(errnoText())") }
        region = try ByteRegion.map(fd: fd, length: Int(st.st_size), name: path)
        var r = GGUFCursor(bytes: region.bytes, name: path)
        let magic = try r.u32(what: "magic")
        guard magic == 0x4655_4747 else {
            throw TensorIOError.badData("\(path): not a GGUF file (bad magic number)")
        }
        version = try r.u32(what: "version")
        guard version == 2 || version == 3 else {
            throw TensorIOError.badData(
                "\(path): GGUF version \(version) is not supported (versions 2 and 3 are)")
        }
        let tensorCount = try r.count(what: "tensor count", minimumBytesEach: 24)
        let kvCount = try r.count(what: "key-value count", minimumBytesEach: 12)
        var meta: [String: GGUFValue] = [:]
        var keys: [String] = []
        for _ in 0..<kvCount {
            let key = try r.string(what: "metadata key")
            let type = try r.u32(what: "type of '\(key)'")
            let value = try r.value(type: type, key: key, depth: 0)
            guard meta[key] == nil else {
                throw TensorIOError.badData("\(path): duplicate metadata key '\(key)'")
            }
            meta[key] = value
            keys.append(key)
        }
        metadata = meta
        metadataKeys = keys
        if let a = meta["general.alignment"] {
            guard case .uint32(let v) = a, v > 0, v & (v - 1) == 0 else {
                throw TensorIOError.badData(
                    "\(path): general.alignment must be a power of two (uint32), got \(a)")
            }
            alignment = Int(v)
        } else {
            alignment = 32
        }
        var infos: [GGUFTensorInfo] = []
        var seen: [String: Int] = [:]
        for i in 0..<tensorCount {
            let name = try r.string(what: "name of tensor \(i)")
            guard seen[name] == nil else {
                throw TensorIOError.badData("\(path): duplicate tensor name '\(name)'")
            }
            let nDims = try r.u32(what: "dimension count of '\(name)'")
            guard nDims <= 4 else {
                throw TensorIOError.badData("\(path): tensor '\(name)' has \(nDims) dimensions (at most 4)")
            }
            var dims: [Int] = []
            var elements = 1
            for _ in 0..<nDims {
                let d = try r.u64(what: "dimension of '\(name)'")
                guard d <= UInt64(Int64.max) else {
                    throw TensorIOError.badData("\(path): tensor '\(name)' has dimension \(d), too large")
                }
                let (product, overflow) = elements.multipliedReportingOverflow(by: Int(d))
                guard !overflow else {
                    throw TensorIOError.badData("\(path): tensor '\(name)': element count overflows")
                }
                elements = product
                dims.append(Int(d))
            }
            let rawType = try r.u32(what: "type of tensor '\(name)'")
            guard let type = GGMLType(rawValue: rawType) else {
                throw TensorIOError.badData("\(path): tensor '\(name)' has unknown ggml type \(rawType)")
            }
            let offset = try r.u64(what: "offset of '\(name)'")
            guard (dims.first ?? 1) % type.blockSize == 0 else {
                throw TensorIOError.badData(
                    "\(path): tensor '\(name)': row length \(dims.first ?? 1) is not a multiple of " +
                    "the \(type.name) block size \(type.blockSize)")
            }
            let (bytes, overflow) = (elements / type.blockSize).multipliedReportingOverflow(by: type.typeSize)
            guard !overflow, offset <= UInt64(Int.max) else {
                throw TensorIOError.badData("\(path): tensor '\(name)': byte size overflows")
            }
            guard Int(offset) % alignment == 0 else {
                throw TensorIOError.badData(
                    "\(path): tensor '\(name)' offset \(offset) is not a multiple of the alignment \(alignment)")
            }
            seen[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: Int(offset),
                                        byteCount: bytes, elementCount: elements))
        }
        let start = (r.position + alignment - 1) / alignment * alignment
        dataStart = start
        let available = region.bytes.count - min(start, region.bytes.count)
        guard start <= region.bytes.count || infos.isEmpty else {
            throw TensorIOError.badData("\(path): truncated before the tensor data")
        }
        // Tensor data must lie inside the file and not overlap.
        for t in infos.sorted(by: { $0.offset < $1.offset }).enumerated() {
            let info = t.element
            let (end, overflow) = info.offset.addingReportingOverflow(info.byteCount)
            guard !overflow, end <= available else {
                throw TensorIOError.badData(
                    "\(path): data of tensor '\(info.name)' [\(info.offset), \(info.offset &+ info.byteCount)) " +
                    "lies beyond the end of the data section (\(available) bytes): truncated file?")
            }
        }
        let sorted = infos.sorted(by: { $0.offset < $1.offset })
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw TensorIOError.badData(
                "\(path): data of tensors '\(a.name)' and '\(b.name)' overlap")
        }
        tensors = infos
        index = seen
    }

    public func tensor(named name: String) -> GGUFTensorInfo? {
        index[name].map { tensors[$0] }
    }

    public func rawBytes(_ t: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: region.bytes[(dataStart + t.offset)..<(dataStart + t.offset + t.byteCount)])
    }

    public func dequantize(_ t: GGUFTensorInfo) throws -> [Float] {
        var out = [Float](repeating: 0, count: t.elementCount)
        try out.withUnsafeMutableBufferPointer { try dequantize(t, into: $0) }
        return out
    }

    /// Rows `ids` of a tensor of two or more dimensions (rows along the first, in Hugging Face's
    /// order of dimensions), dequantised alone: [ids.count, row length]. Every GGUF row is whole
    /// blocks, so a row's bytes are the tensor's divided by its rows.
    public func dequantizeRows(_ t: GGUFTensorInfo, _ ids: [Int]) throws -> [Float] {
        guard t.type.canDequantize else {
            throw TensorIOError.badData(
                "\(path): tensor '\(t.name)' has type \(t.type.name), which PruneKit cannot dequantize")
        }
        let rows = t.shape.first ?? 1, width = t.elementCount / max(rows, 1)
        guard t.shape.count >= 2, t.byteCount % rows == 0 else {
            throw TensorIOError.badData("\(path): tensor '\(t.name)' has shape \(t.shape); rows need two dimensions")
        }
        if let bad = ids.first(where: { $0 < 0 || $0 >= rows }) {
            throw TensorIOError.badData("\(path): row \(bad) of tensor '\(t.name)' is outside its \(rows) rows")
        }
        let rowBytes = t.byteCount / rows, all = rawBytes(t)
        var out = [Float](repeating: 0, count: ids.count * width)
        try out.withUnsafeMutableBufferPointer { o in
            for (i, id) in ids.enumerated() {
                try ggmlDequantize(type: t.type, UnsafeRawBufferPointer(rebasing: all[(id * rowBytes)..<((id + 1) * rowBytes)]),
                                   into: UnsafeMutableBufferPointer(rebasing: o[(i * width)..<((i + 1) * width)]))
                let from = dataStart + t.offset + id * rowBytes
                region.dropPages(from..<(from + rowBytes))
            }
        }
        return out
    }

    public func dequantize(_ t: GGUFTensorInfo, into out: UnsafeMutableBufferPointer<Float>) throws {
        guard out.count == t.elementCount else {
            throw TensorIOError.badData("\(path): tensor '\(t.name)': output holds \(out.count) floats, need \(t.elementCount)")
        }
        guard t.type.canDequantize else {
            throw TensorIOError.badData(
                "\(path): tensor '\(t.name)' has type \(t.type.name), which PruneKit cannot dequantize")
        }
        try ggmlDequantize(type: t.type, rawBytes(t), into: out)
        region.dropPages((dataStart + t.offset)..<(dataStart + t.offset + t.byteCount))
    }
}

/// Reads little-endian values from the mapped header, every read bounds-checked.
struct GGUFCursor {
    let bytes: UnsafeRawBufferPointer
    let name: String
    var position = 0

    init(bytes: UnsafeRawBufferPointer, name: String) {
        self.bytes = bytes
        self.name = name
    }

    var remaining: Int { bytes.count - position }

    mutating func need(_ n: Int, _ what: String) throws {
        guard n >= 0, n <= remaining else {
            throw TensorIOError.badData(
                "\(name): truncated GGUF: \(what) needs \(n) bytes at offset \(position), \(remaining) remain")
        }
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, what: String) throws -> T {
        try need(MemoryLayout<T>.size, what)
        let v = T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
        position += MemoryLayout<T>.size
        return v
    }

    mutating func u32(what: String) throws -> UInt32 { try load(UInt32.self, what: what) }
    mutating func u64(what: String) throws -> UInt64 { try load(UInt64.self, what: what) }

    /// A u64 count of items each taking at least `minimumBytesEach` bytes: checked against what
    /// remains, so that a corrupt count cannot make us allocate or loop without end.
    mutating func count(what: String, minimumBytesEach: Int) throws -> Int {
        let n = try u64(what: what)
        guard n <= UInt64(remaining / max(minimumBytesEach, 1)) else {
            throw TensorIOError.badData(
                "\(name): GGUF \(what) \(n) is larger than the \(remaining) remaining bytes can hold " +
                "(corrupt or truncated file)")
        }
        return Int(n)
    }

    mutating func string(what: String) throws -> String {
        let n = try u64(what: "length of \(what)")
        guard n <= UInt64(remaining) else {
            throw TensorIOError.badData(
                "\(name): GGUF \(what) has length \(n), beyond the \(remaining) remaining bytes")
        }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[position..<(position + Int(n))]),
                       as: UTF8.self)
        position += Int(n)
        return s
    }

    mutating func value(type: UInt32, key: String, depth: Int) throws -> GGUFValue {
        let what = "value of '\(key)'"
        switch type {
        case 0: return .uint8(try load(UInt8.self, what: what))
        case 1: return .int8(try load(Int8.self, what: what))
        case 2: return .uint16(try load(UInt16.self, what: what))
        case 3: return .int16(try load(Int16.self, what: what))
        case 4: return .uint32(try load(UInt32.self, what: what))
        case 5: return .int32(try load(Int32.self, what: what))
        case 6: return .float32(Float(bitPattern: try load(UInt32.self, what: what)))
        case 7:
            let b = try load(UInt8.self, what: what)
            guard b <= 1 else { throw TensorIOError.badData("\(name): '\(key)': bool byte \(b) is not 0 or 1") }
            return .bool(b == 1)
        case 8: return .string(try string(what: what))
        case 9:
            guard depth == 0 else {
                throw TensorIOError.badData("\(name): '\(key)': nested arrays are not supported")
            }
            let elementType = try u32(what: "array type of '\(key)'")
            let minimum: Int
            switch elementType {
            case 0, 1, 7: minimum = 1
            case 2, 3: minimum = 2
            case 4, 5, 6: minimum = 4
            case 8, 10, 11, 12: minimum = 8
            default:
                throw TensorIOError.badData("\(name): '\(key)': unknown array element type \(elementType)")
            }
            let n = try count(what: "array length of '\(key)'", minimumBytesEach: minimum)
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try value(type: elementType, key: key, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint64(try load(UInt64.self, what: what))
        case 11: return .int64(try load(Int64.self, what: what))
        case 12: return .float64(Double(bitPattern: try load(UInt64.self, what: what)))
        default:
            throw TensorIOError.badData("\(name): '\(key)' has unknown value type \(type)")
        }
    }
}
