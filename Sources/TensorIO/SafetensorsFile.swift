// Random access to a tensor file: plain safetensors on disk is mapped; zstd-compressed input (or
// any pipe) is read once into memory, or into an unlinked temporary file that is then mapped
// when it grows past `TensorFile.memoryLimit`.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class TensorFile {
    public let header: SafetensorsHeader
    public var metadata: [String: String] { header.metadata }
    /// The name used in messages ("<stdin>" for "-").
    public let name: String
    private let region: ByteRegion
    private let dataStart: Int

    /// Decompressed or piped input larger than this goes to a temporary file (then mapped).
    public static let memoryLimit = 256 << 20

    public init(path: String) throws {
        let source = try openForReading(path)
        name = source.name
        region = try TensorFile.load(source)
        let b = region.bytes
        guard b.count >= 8 else {
            throw TensorIOError.badData(
                "\(name): truncated: \(b.count) bytes, fewer than the 8 of the header length")
        }
        let length = try checkedHeaderLength(b.loadUnaligned(as: UInt64.self), name: name)
        guard length <= b.count - 8 else {
            throw TensorIOError.badData(
                "\(name): header length \(length) exceeds the \(b.count - 8) bytes that follow it "
                + "(truncated or not a safetensors file)")
        }
        header = try SafetensorsHeader.parse(
            UnsafeRawBufferPointer(rebasing: b[8..<(8 + length)]), source: name)
        dataStart = 8 + length
        try checkDataLength(header, available: b.count - dataStart, name: name)
    }

    /// Maps a regular file read from its start; reads anything else (pipe, zstd) through a
    /// SpillBuffer, decompressing when the input starts with the zstd magic.
    private static func load(_ source: FileDescriptorSource) throws -> ByteRegion {
        var st = stat()
        let regular = fstat(source.fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
            && lseek(source.fd, 0, SEEK_CUR) == 0
        var head = [UInt8](repeating: 0, count: 4)
        let got = try head.withUnsafeMutableBytes { try source.readFully(into: $0) }
        head.removeLast(4 - got)
        let compressed = head == zstdMagic
        if regular && !compressed {
            return try ByteRegion.map(fd: source.fd, length: Int(st.st_size), name: source.name)
        }
        var input: ByteSource = ChainedSource(prefix: head, rest: source)
        var expected: Int? = regular ? Int(st.st_size) : nil
        if compressed {
            let z = try ZstdSource(source: input, name: source.name)
            expected = z.header?.contentSize.flatMap { Int(exactly: $0) }
            input = z
        }
        let spill = SpillBuffer(memoryLimit: memoryLimit, expectedSize: expected, name: source.name)
        // The header says how long the file is: a stream that goes on far beyond that (a zstd bomb,
        // a gigabyte of zeros after the last tensor) is refused without reading it all.
        var prefix: [UInt8] = [], bound: Int?
        while true {
            let space = try spill.reserve(1 << 20)
            let n = try input.read(into: space)
            if n == 0 { break }
            try spill.commit(n)
            if bound == nil {
                prefix.append(contentsOf: UnsafeRawBufferPointer(rebasing: space[0..<n]))
                if prefix.count >= 8 {
                    let length = try checkedHeaderLength(prefix.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) },
                                                         name: source.name)
                    if prefix.count >= 8 + length {
                        let header = try prefix.withUnsafeBytes {
                            try SafetensorsHeader.parse(UnsafeRawBufferPointer(rebasing: $0[8..<(8 + length)]), source: source.name)
                        }
                        bound = 8 + length + header.dataLength
                        prefix = []
                    }
                }
            }
            if let bound, spill.count > bound + (1 << 20) {
                throw TensorIOError.badData(
                    "\(source.name): more than \(spill.count - bound) trailing bytes after the last tensor (the tensors "
                    + "need \(bound) bytes in all); not read further")
            }
        }
        return try spill.finish()
    }

    /// sha256 of the file's contents as read (decompressed when the file is zstd): what a caller
    /// that records where its data came from hashes, without reading the file a second time (a
    /// pipe can be read only once).
    public func contentSHA256() -> String {
        withExtendedLifetime(region) { SHA256.hexDigest(region.bytes) }
    }

    /// The raw little-endian bytes of tensor `name`, valid during `body`. Not necessarily
    /// aligned for the element type: load with `loadUnaligned` or copy.
    public func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let (entry, start) = try locate(name)
        let slice = UnsafeRawBufferPointer(rebasing: region.bytes[start..<(start + entry.byteCount)])
        defer { region.dropPages(start..<(start + entry.byteCount)) }
        return try withExtendedLifetime(region) { try body(slice) }
    }

    private func locate(_ tensor: String) throws -> (TensorEntry, Int) {
        guard let k = header.position(of: tensor) else {
            throw TensorIOError.badData("\(name): no tensor '\(tensor)'")
        }
        return (header.entries[k], dataStart + header.offsets[k])
    }

    /// The tensor as Float, from F32, F16, BF16 (exact) or F64 (rounded).
    public func floats(_ tensor: String) throws -> [Float] {
        let (entry, _) = try locate(tensor)
        return try withBytes(tensor) { raw in
            try [Float](unsafeUninitializedCapacity: entry.elementCount) { buf, count in
                try reading(entry) { try convertToFloat(raw, dtype: entry.dtype, into: buf) }
                count = entry.elementCount
            }
        }
    }

    /// Rows `ids` of a tensor of two or more dimensions (rows along the first), as Float
    /// [ids.count, row length]: only those rows are read and widened — a batch's rows of a
    /// 128k-token embedding, not its 2 GB as F32. Ids are checked against the row count.
    public func floatRows(_ tensor: String, _ ids: [Int]) throws -> [Float] {
        let (entry, start) = try locate(tensor)
        guard entry.shape.count >= 2 else {
            throw TensorIOError.badData("\(name): tensor '\(tensor)' has shape \(entry.shape); rows need two dimensions")
        }
        let rows = entry.shape[0], width = entry.elementCount / max(rows, 1), rowBytes = width * entry.dtype.size
        if let bad = ids.first(where: { $0 < 0 || $0 >= rows }) {
            throw TensorIOError.badData("\(name): row \(bad) of tensor '\(tensor)' is outside its \(rows) rows")
        }
        return try withExtendedLifetime(region) {
            try [Float](unsafeUninitializedCapacity: ids.count * width) { buf, count in
                for (i, id) in ids.enumerated() {
                    let from = start + id * rowBytes
                    let row = UnsafeRawBufferPointer(rebasing: region.bytes[from..<(from + rowBytes)])
                    try reading(entry) {
                        try convertToFloat(row, dtype: entry.dtype, into: UnsafeMutableBufferPointer(rebasing: buf[(i * width)..<((i + 1) * width)]))
                    }
                    region.dropPages(from..<(from + rowBytes))
                }
                count = ids.count * width
            }
        }
    }

    /// The tensor as Double, from F64, F32, F16 or BF16 (all exact).
    public func doubles(_ tensor: String) throws -> [Double] {
        let (entry, _) = try locate(tensor)
        return try withBytes(tensor) { raw in
            try [Double](unsafeUninitializedCapacity: entry.elementCount) { buf, count in
                try reading(entry) { try convertToDouble(raw, dtype: entry.dtype, into: buf) }
                count = entry.elementCount
            }
        }
    }

    /// The tensor as Int, from I64, I32, I16, I8, U8 or BOOL.
    public func integers(_ tensor: String) throws -> [Int] {
        let (entry, _) = try locate(tensor)
        return try withBytes(tensor) { raw in
            try [Int](unsafeUninitializedCapacity: entry.elementCount) { buf, count in
                try reading(entry) { try convertToInt(raw, dtype: entry.dtype, into: buf) }
                count = entry.elementCount
            }
        }
    }

    /// Prefixes conversion errors with the file and tensor.
    private func reading(_ entry: TensorEntry, _ body: () throws -> Void) throws {
        do { try body() } catch let e as TensorIOError {
            throw TensorIOError(e.kind, "\(name): tensor '\(entry.name)' (\(entry.dtype)): \(e.message)")
        }
    }
}

/// The header length field, checked against the safetensors limit.
func checkedHeaderLength(_ raw: UInt64, name: String) throws -> Int {
    let length = UInt64(littleEndian: raw)
    guard length <= UInt64(safetensorsMaxHeaderLength) else {
        throw TensorIOError.badData(
            "\(name): header length \(length) exceeds the limit of \(safetensorsMaxHeaderLength) "
            + "bytes (not a safetensors file?)")
    }
    return Int(length)
}

/// The data section must be exactly as long as the tensors say.
func checkDataLength(_ header: SafetensorsHeader, available: Int, name: String) throws {
    if header.dataLength > available {
        throw TensorIOError.badData(
            "\(name): truncated data: the tensors need \(header.dataLength) bytes after the header, "
            + "the input holds \(available)")
    }
    if header.dataLength < available {
        throw TensorIOError.badData(
            "\(name): \(available - header.dataLength) trailing bytes after the last tensor "
            + "(the tensors need \(header.dataLength) bytes after the header, the input holds \(available))")
    }
}
