// Sequential reading of a tensor file: the header, then each tensor in file order, holding one
// tensor at a time, so that a 20 GB model can come through a pipe. Truncation, trailing bytes and
// (zstd) the frame's checksum and end are checked as the input is consumed.

public final class TensorStreamReader {
    public let header: SafetensorsHeader
    public var metadata: [String: String] { header.metadata }
    /// The name used in messages ("<stdin>" for "-").
    public let name: String
    private let source: ByteSource
    private var nextIndex = 0
    private var ended = false
    private var failure: TensorIOError?

    /// Reads `path` ("-" is standard input), plain or zstd (sniffed).
    public convenience init(path: String) throws {
        let source = try openForReading(path)
        try self.init(source: source, name: source.name)
    }

    /// Reads from an open descriptor, which stays open (the caller owns it).
    public convenience init(fileDescriptor: Int32, name: String) throws {
        try self.init(source: FileDescriptorSource(fd: fileDescriptor, name: name, owns: false),
                      name: name)
    }

    private init(source raw: ByteSource, name: String) throws {
        self.name = name
        var head = [UInt8](repeating: 0, count: 4)
        let got = try head.withUnsafeMutableBytes { try raw.readFully(into: $0) }
        head.removeLast(4 - got)
        if head == Array("GGUF".utf8) {
            throw TensorIOError.badData("\(name): a GGUF file is read with seeks: give it as a regular file, not a pipe or standard input")
        }
        let chained = ChainedSource(prefix: head, rest: raw)
        let source: ByteSource = head == zstdMagic
            ? try ZstdSource(source: chained, name: name) : chained
        self.source = source

        var lengthField: UInt64 = 0
        let n = try withUnsafeMutableBytes(of: &lengthField) { try source.readFully(into: $0) }
        guard n == 8 else {
            throw TensorIOError.badData(
                "\(name): truncated: \(n) bytes, fewer than the 8 of the header length")
        }
        let length = try checkedHeaderLength(lengthField, name: name)
        // Grown as bytes arrive, so that a lying length does not allocate up front.
        var text: [UInt8] = []
        var have = 0
        while have < length {
            let step = min(length - have, max(have, 1 << 16))
            text.append(contentsOf: repeatElement(0, count: step))
            let got = try text.withUnsafeMutableBytes {
                try source.readFully(into: UnsafeMutableRawBufferPointer(rebasing: $0[have...]))
            }
            have += got
            if got < step {
                throw TensorIOError.badData(
                    "\(name): truncated header: the length field says \(length) bytes, the input "
                    + "ends after \(have)")
            }
        }
        header = try text.withUnsafeBytes { try SafetensorsHeader.parse($0, source: name) }
    }

    /// The next tensor in file order, or nil after the last one — having checked that nothing
    /// follows it and, for zstd, that the frame ended with a matching checksum.
    public func next() throws -> (entry: TensorEntry, bytes: [UInt8])? {
        if let failure { throw failure }
        if ended { return nil }
        do { return try advance() } catch let e as TensorIOError {
            // The input position is unknown after a failure: every later call repeats it.
            failure = e
            throw e
        }
    }

    private func advance() throws -> (entry: TensorEntry, bytes: [UInt8])? {
        guard nextIndex < header.entries.count else {
            let extra = try source.drain(limit: 1 << 20)  // a bomb is refused after a megabyte, not read to its end
            guard extra == 0 else {
                throw TensorIOError.badData(
                    "\(name): \(extra >= 1 << 20 ? "at least \(extra)" : "\(extra)") trailing "
                    + "bytes after the last tensor (the tensors need \(header.dataLength) bytes "
                    + "after the header)")
            }
            ended = true
            return nil
        }
        let entry = header.entries[nextIndex]
        let offset = header.offsets[nextIndex]
        let count = entry.byteCount
        var got = 0
        let bytes = try [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            got = try source.readFully(into: UnsafeMutableRawBufferPointer(buf))
            initialized = got
        }
        guard got == count else {
            throw TensorIOError.badData(
                "\(name): truncated data: tensor '\(entry.name)' needs \(count) bytes at offset "
                + "\(offset) of the data section, the input ends after \(got)")
        }
        nextIndex += 1
        return (entry, bytes)
    }
}
