// Writing a tensor file: the header first (all entries are known up front), then each tensor's
// bytes in order, plain or as one zstd frame, atomically (temporary file, fsync, rename).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class TensorFileWriter: WholeFileWriter {
    public let header: SafetensorsHeader
    private let output: OutputFile
    private let buffered: BufferedSink
    private let encoder: ZstdEncoder?
    private var nextIndex = 0
    private var failed = false
    private var done = false

    /// - Parameters:
    ///   - compress: nil means zstd when `path` ends in ".zst", or when `path` is "-" and standard
    ///     output is not a regular file (a pipe); plain otherwise.
    ///   - level: zstd level (1…19; 3 is zstd's default).
    public init(path: String, entries: [TensorEntry], metadata: [String: String],
                compress: Bool? = nil, level: Int32 = 3) throws {
        header = try SafetensorsHeader(metadata: metadata, entries: entries)
        let zstd = compress ?? TensorFileWriter.defaultCompression(path: path)
        let text = header.encoded()
        // 8 + header + data, overflow-checked so that the pledged frame size cannot wrap.
        let (total, overflow) = (8 + text.count).addingReportingOverflow(header.dataLength)
        guard !overflow else { throw TensorIOError.badData("\(path): tensors too large to write") }
        output = try OutputFile(path: path)
        let buffered = BufferedSink(output: output)
        self.buffered = buffered
        encoder = zstd
            ? try ZstdEncoder(level: level, pledgedSize: UInt64(total), name: output.name) {
                try buffered.write($0)
            }
            : nil
        var length = UInt64(text.count).littleEndian
        try withUnsafeBytes(of: &length) { try emit($0) }
        try text.withUnsafeBytes { try emit($0) }
    }

    deinit { output.discard() }

    static func defaultCompression(path: String) -> Bool {
        if path.hasSuffix(".zst") { return true }
        if path == "-" {
            var st = stat()
            return !(fstat(1, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG)
        }
        return false
    }

    /// The temporary file being written (nil for standard output or after finish/abort).
    public var temporaryPath: String? { output.temporaryPath }

    private func emit(_ bytes: UnsafeRawBufferPointer) throws {
        do {
            if let encoder { try encoder.write(bytes) } else { try buffered.write(bytes) }
        } catch {
            failed = true
            throw error
        }
    }

    /// The entry that must come next, checked against `name` and `byteCount`.
    private func expect(_ name: String, byteCount: Int) throws -> TensorEntry {
        guard !failed, !done else {
            throw TensorIOError.io("\(output.name): write of '\(name)' after the writer "
                                   + (done ? "finished or was aborted" : "failed"))
        }
        guard nextIndex < header.entries.count else {
            throw TensorIOError.badData(
                "\(output.name): tensor '\(name)' written after all \(header.entries.count) tensors")
        }
        let entry = header.entries[nextIndex]
        guard entry.name == name else {
            let declared = header.position(of: name).map { "tensor \($0 + 1)" } ?? "not declared"
            throw TensorIOError.badData(
                "\(output.name): tensor '\(name)' (\(declared)) written out of order: expected "
                + "'\(entry.name)' (tensor \(nextIndex + 1) of \(header.entries.count))")
        }
        guard byteCount == entry.byteCount else {
            throw TensorIOError.badData(
                "\(output.name): tensor '\(name)' has \(byteCount) bytes, but shape \(entry.shape) "
                + "of \(entry.dtype) needs \(entry.byteCount)")
        }
        return entry
    }

    /// The next tensor's raw little-endian bytes; must follow the entries' order and sizes.
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws {
        _ = try expect(name, byteCount: bytes.count)
        try emit(bytes)
        nextIndex += 1
    }

    /// Converts to the entry's dtype (F32, F16, BF16 or F64; see HalfPrecision.swift for rounding).
    public func write(_ name: String, floats: [Float]) throws {
        try floats.withUnsafeBufferPointer { src in
            try writeConverted(name, count: src.count, kind: "floating-point") { range, dst, dtype in
                encodeFloats(UnsafeBufferPointer(rebasing: src[range]), dtype: dtype, into: dst)
            }
        }
    }

    /// The next tensor from consecutive parts of its values: `body` hands each part to the function
    /// it is given, in order, so that a large tensor (a 128k vocabulary's embedding) is never whole
    /// in memory. Together the parts must be exactly the entry's elements.
    public func write(_ name: String, inParts body: ((UnsafeBufferPointer<Float>) throws -> Void) throws -> Void) throws {
        guard nextIndex < header.entries.count, header.entries[nextIndex].name == name else {
            _ = try expect(name, byteCount: -1)
            return
        }
        let entry = try expect(name, byteCount: header.entries[nextIndex].byteCount)
        guard [DType.F32, .F16, .BF16, .F64].contains(entry.dtype) else {
            throw TensorIOError.badData("\(output.name): tensor '\(name)' is \(entry.dtype); cannot write floating-point values to it")
        }
        let chunk = max(1, (4 << 20) / entry.dtype.size)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk * entry.dtype.size, alignment: 64)
        defer { buffer.deallocate() }
        var written = 0
        try body { part in
            guard written + part.count <= entry.elementCount else {
                failed = true
                throw TensorIOError.badData("\(output.name): tensor '\(name)': parts exceed its \(entry.elementCount) elements")
            }
            for start in stride(from: 0, to: part.count, by: chunk) {
                let n = min(chunk, part.count - start)
                let dst = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<(n * entry.dtype.size)])
                encodeFloats(UnsafeBufferPointer(rebasing: part[start..<(start + n)]), dtype: entry.dtype, into: dst)
                try emit(UnsafeRawBufferPointer(dst))
            }
            written += part.count
        }
        guard written == entry.elementCount else {
            failed = true
            throw TensorIOError.badData("\(output.name): tensor '\(name)': parts hold \(written) of its \(entry.elementCount) elements")
        }
        nextIndex += 1
    }

    public func write(_ name: String, doubles: [Double]) throws {
        try doubles.withUnsafeBufferPointer { src in
            try writeConverted(name, count: src.count, kind: "floating-point") { range, dst, dtype in
                encodeDoubles(UnsafeBufferPointer(rebasing: src[range]), dtype: dtype, into: dst)
            }
        }
    }

    /// Converts to the entry's integer dtype (I64, I32, I16, I8, U8, BOOL); every value must fit,
    /// which is checked before anything is written.
    public func write(_ name: String, integers: [Int]) throws {
        if nextIndex < header.entries.count, header.entries[nextIndex].name == name {
            let dtype = header.entries[nextIndex].dtype
            if let bad = firstValueOutOfRange(integers, dtype: dtype) {
                throw TensorIOError.badData(
                    "\(output.name): tensor '\(name)': value \(integers[bad]) at index \(bad) "
                    + "does not fit in \(dtype)")
            }
        }
        try integers.withUnsafeBufferPointer { src in
            try writeConverted(name, count: src.count, kind: "integer") { range, dst, dtype in
                _ = encodeIntegers(UnsafeBufferPointer(rebasing: src[range]), dtype: dtype, into: dst)
            }
        }
    }

    /// Encodes in chunks of at most 4 MB, so that converting never doubles a tensor in memory.
    private func writeConverted(
        _ name: String, count: Int, kind: String,
        encode: (Range<Int>, UnsafeMutableRawBufferPointer, DType) -> Void
    ) throws {
        guard nextIndex < header.entries.count, header.entries[nextIndex].name == name else {
            _ = try expect(name, byteCount: -1)
            return
        }
        let dtype = header.entries[nextIndex].dtype
        let isFloat = [DType.F32, .F16, .BF16, .F64].contains(dtype)
        guard isFloat == (kind == "floating-point") else {
            throw TensorIOError.badData(
                "\(output.name): tensor '\(name)' is \(dtype); cannot write \(kind) values to it")
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        _ = try expect(name, byteCount: overflow ? -1 : bytes)
        let chunk = max(1, (4 << 20) / dtype.size)
        let buffer = UnsafeMutableRawBufferPointer.allocate(
            byteCount: max(1, min(count, chunk) * dtype.size), alignment: 64)
        defer { buffer.deallocate() }
        var start = 0
        while start < count {
            let n = min(chunk, count - start)
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<(n * dtype.size)])
            encode(start..<(start + n), dst, dtype)
            try emit(UnsafeRawBufferPointer(dst))
            start += n
        }
        nextIndex += 1
    }

    /// Ends the file: checks every tensor was written, ends the zstd frame, flushes, and (for a
    /// path) fsyncs and renames the temporary over the target.
    public func finish() throws {
        guard !done else { return }
        guard !failed else {
            throw TensorIOError.io("\(output.name): cannot finish after a failed write")
        }
        guard nextIndex == header.entries.count else {
            throw TensorIOError.badData(
                "\(output.name): finished after \(nextIndex) of \(header.entries.count) tensors "
                + "(next: '\(header.entries[nextIndex].name)')")
        }
        do {
            try encoder?.finish()
            try buffered.flush()
            try output.commit()
        } catch {
            failed = true
            output.discard()
            throw error
        }
        done = true
    }

    /// Gives up: removes the temporary; an existing target is left as it was.
    public func abort() {
        done = true
        output.discard()
    }
}

/// Writes a whole tensor file at once (tensors in the given order).
public func writeTensorFile(path: String, tensors: [(TensorEntry, [UInt8])],
                            metadata: [String: String], compress: Bool? = nil) throws {
    let writer = try TensorFileWriter(path: path, entries: tensors.map(\.0), metadata: metadata,
                                      compress: compress)
    for (entry, bytes) in tensors {
        try bytes.withUnsafeBytes { try writer.write(entry.name, bytes: $0) }
    }
    try writer.finish()
}
