import Foundation

// Writing a GGUF file (version 3): header, metadata key-values, tensor infos, then the tensors'
// data, each aligned to `general.alignment` (32), in the order of the infos. Tensors are written
// as they come, so a tool holds one layer at a time; the file goes through a temporary and is
// renamed into place (OutputFile), as every output.

public final class GGUFWriter: WholeFileWriter {
    public struct TensorSpec {
        public var name: String
        /// Hugging Face order (rows first); written reversed, as ggml's ne[0] is the innermost.
        public var shape: [Int]
        public var type: GGMLType
        public init(name: String, shape: [Int], type: GGMLType) {
            self.name = name
            self.shape = shape
            self.type = type
        }
        var elements: Int { shape.reduce(1, *) }
        var bytes: Int { elements / type.blockSize * type.typeSize }
    }

    public static let alignment = 32
    private let output: OutputFile
    private let sink: BufferedSink
    private let specs: [TensorSpec]
    private var next = 0

    public init(path: String, metadata: [(String, GGUFValue)], tensors: [TensorSpec]) throws {
        for t in tensors where (t.shape.last ?? 0) % t.type.blockSize != 0 {
            throw TensorIOError.badData("\(path): tensor '\(t.name)' has rows of \(t.shape.last ?? 0) values, not a multiple of \(t.type)'s block of \(t.type.blockSize)")
        }
        output = try OutputFile(path: path)
        sink = BufferedSink(output: output)
        specs = tensors
        var header: [UInt8] = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { header += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { header += $0 } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); header += Array(s.utf8) }
        func value(_ v: GGUFValue, typed: Bool) {
            func tag(_ t: UInt32) { if typed { u32(t) } }
            switch v {
            case .uint8(let x): tag(0); header.append(x)
            case .int8(let x): tag(1); header.append(UInt8(bitPattern: x))
            case .uint16(let x): tag(2); withUnsafeBytes(of: x.littleEndian) { header += $0 }
            case .int16(let x): tag(3); withUnsafeBytes(of: x.littleEndian) { header += $0 }
            case .uint32(let x): tag(4); u32(x)
            case .int32(let x): tag(5); u32(UInt32(bitPattern: x))
            case .float32(let x): tag(6); u32(x.bitPattern)
            case .bool(let x): tag(7); header.append(x ? 1 : 0)
            case .string(let s): tag(8); string(s)
            case .array(let items):
                tag(9)
                u32(items.first.map(Self.typeCode) ?? 4)
                u64(UInt64(items.count))
                for item in items { value(item, typed: false) }
            case .uint64(let x): tag(10); u64(x)
            case .int64(let x): tag(11); u64(UInt64(bitPattern: x))
            case .float64(let x): tag(12); u64(x.bitPattern)
            }
        }
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (key, v) in metadata {
            string(key)
            value(v, typed: true)
        }
        var offset = 0
        for t in tensors {
            string(t.name)
            u32(UInt32(t.shape.count))
            for d in t.shape.reversed() { u64(UInt64(d)) }
            u32(t.type.rawValue)
            u64(UInt64(offset))
            offset += (t.bytes + Self.alignment - 1) / Self.alignment * Self.alignment
        }
        while header.count % Self.alignment != 0 { header.append(0) }
        try header.withUnsafeBytes { try sink.write($0) }
    }

    deinit { output.discard() }

    static func typeCode(_ v: GGUFValue) -> UInt32 {
        switch v {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }

    /// The next tensor's values, converted to its type (F32, F16 or Q8_0 as llama.cpp's reference
    /// quantiser does: per block of 32, d = max|x|/127 as F16, q = round(x/d)).
    public func write(_ name: String, _ values: [Float]) throws {
        try write(name) { emit in try emit(values) }
    }

    /// The next tensor's values in order, given in parts (`body` calls `emit` once per part, each a whole number
    /// of the type's blocks, e.g. a block of rows): a large tensor is written without being held whole.
    public func write(_ name: String, inParts body: (_ emit: ([Float]) throws -> Void) throws -> Void) throws {
        guard next < specs.count, specs[next].name == name else {
            throw TensorIOError.badData("GGUF writer: expected tensor \(next < specs.count ? specs[next].name : "none"), got \(name)")
        }
        let t = specs[next]
        guard [.F32, .F16, .Q8_0].contains(t.type) else { throw TensorIOError.badData("GGUF writer: cannot write \(t.type)") }
        var written = 0
        try body { values in
            guard values.count % t.type.blockSize == 0, written + values.count <= t.elements else {
                throw TensorIOError.badData("GGUF writer: tensor \(name): a part of \(values.count) values after \(written) does not fit its \(t.elements) in blocks of \(t.type.blockSize)")
            }
            var bytes = [UInt8]()
            bytes.reserveCapacity(values.count / t.type.blockSize * t.type.typeSize)
            switch t.type {
            case .F32:
                values.withUnsafeBytes { bytes += $0 }
            case .F16:
                for v in values { withUnsafeBytes(of: Float16(v).bitPattern.littleEndian) { bytes += $0 } }
            default:  // Q8_0
                for start in stride(from: 0, to: values.count, by: 32) {
                    let block = values[start..<start + 32]
                    let amax = block.reduce(Float(0)) { max($0, abs($1)) }
                    let d = amax / 127
                    let id: Float = d != 0 ? 1 / d : 0
                    withUnsafeBytes(of: Float16(d).bitPattern.littleEndian) { bytes += $0 }
                    for v in block { bytes.append(UInt8(bitPattern: Int8((v * id).rounded()))) }
                }
            }
            try bytes.withUnsafeBytes { try sink.write($0) }
            written += values.count
        }
        guard written == t.elements else {
            throw TensorIOError.badData("GGUF writer: tensor \(name): parts hold \(written) of its \(t.elements) values")
        }
        let padding = (Self.alignment - t.bytes % Self.alignment) % Self.alignment
        if padding > 0 { try [UInt8](repeating: 0, count: padding).withUnsafeBytes { try sink.write($0) } }
        next += 1
    }

    public func finish() throws {
        guard next == specs.count else {
            throw TensorIOError.badData("GGUF writer: \(specs.count - next) tensors were not written")
        }
        try sink.flush()
        try output.commit()
    }

    public func abort() { output.discard() }
}
