// One zstd frame with a content checksum, streamed in both directions in constant memory.
//
// The reader insists on exactly one frame carrying a checksum (RFC 8878 §3.1.1: the frame header
// descriptor's Content_Checksum_flag) and on nothing after it, so that corruption, truncation and
// concatenated junk are all reported rather than silently decoded. The frame header is parsed
// here because libzstd exposes ZSTD_getFrameHeader only to static linking.
import _CZstd

/// The four bytes every zstd frame starts with (0xFD2FB528 little-endian).
let zstdMagic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]

/// Whether the file at `path` starts with the zstd magic (false for "-": sniffing standard input
/// would consume it; the readers sniff it themselves). A file that cannot be read is an error.
public func isZstdFile(path: String) throws -> Bool {
    guard path != "-" else { return false }
    let source = try openForReading(path)
    var head = [UInt8](repeating: 0, count: 4)
    let n = try head.withUnsafeMutableBytes { try source.readFully(into: $0) }
    return n == 4 && head == zstdMagic
}

/// What the frame header says (RFC 8878 §3.1.1.1).
struct ZstdFrameHeader {
    var hasChecksum: Bool
    /// The decompressed size when the frame records it.
    var contentSize: UInt64?
    /// Bytes the header occupies, from the magic on.
    var length: Int

    /// Parses from the start of a frame; nil if more bytes are needed; throws if malformed.
    static func parse(_ b: UnsafeRawBufferPointer, name: String) throws -> ZstdFrameHeader? {
        guard b.count >= 5 else { return nil }
        guard Array(b[0..<4]) == zstdMagic else {
            throw TensorIOError.badData("\(name): not a zstd frame (bad magic number)")
        }
        let descriptor = b[4]
        guard descriptor & 0x08 == 0 else {
            throw TensorIOError.badData("\(name): bad zstd frame header (reserved bit set)")
        }
        let singleSegment = descriptor & 0x20 != 0
        let sizeFieldBytes = [singleSegment ? 1 : 0, 2, 4, 8][Int(descriptor >> 6)]
        let dictionaryBytes = [0, 1, 2, 4][Int(descriptor & 3)]
        let length = 5 + (singleSegment ? 0 : 1) + dictionaryBytes + sizeFieldBytes
        guard b.count >= length else { return nil }
        var size: UInt64?
        if sizeFieldBytes > 0 {
            var v: UInt64 = 0
            let start = length - sizeFieldBytes
            for i in (0..<sizeFieldBytes).reversed() { v = v << 8 | UInt64(b[start + i]) }
            size = sizeFieldBytes == 2 ? v + 256 : v
        }
        return ZstdFrameHeader(hasChecksum: descriptor & 0x04 != 0, contentSize: size, length: length)
    }
}

/// Decompresses one zstd frame from `source`; `read` returns 0 only after the frame ended, its
/// checksum matched and the compressed input ended with it.
final class ZstdSource: ByteSource {
    private let source: ByteSource
    private let name: String
    private let context: OpaquePointer
    private let input: UnsafeMutableRawBufferPointer
    private var inputPosition = 0
    private var inputEnd = 0
    private var consumed = 0  // compressed bytes consumed before the current input buffer
    private var finished = false
    private(set) var header: ZstdFrameHeader?

    init(source: ByteSource, name: String) throws {
        guard let context = ZSTD_createDCtx() else {
            throw TensorIOError.io("\(name): cannot allocate a zstd decoder")
        }
        self.source = source
        self.name = name
        self.context = context
        input = .allocate(byteCount: 1 << 20, alignment: 64)
        try readFrameHeader()
    }

    deinit {
        ZSTD_freeDCtx(context)
        input.deallocate()
    }

    /// Returns false at the end of the compressed input.
    private func refill() throws -> Bool {
        if inputPosition < inputEnd { return true }
        consumed += inputEnd
        inputPosition = 0
        inputEnd = try source.read(into: input)
        return inputEnd > 0
    }

    private func readFrameHeader() throws {
        // Gather up to the longest frame header (18 bytes) without consuming it.
        while true {
            let have = UnsafeRawBufferPointer(rebasing: input[0..<inputEnd])
            if let h = try ZstdFrameHeader.parse(have, name: name) {
                guard h.hasChecksum else {
                    throw TensorIOError.badData(
                        "\(name): the zstd frame carries no content checksum; PruneKit requires one "
                        + "(compress with `zstd --check`, zstd's default)")
                }
                header = h
                return
            }
            let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: input[inputEnd...]))
            if n == 0 {
                throw TensorIOError.badData(
                    "\(name): truncated zstd frame: the input ends inside the frame header "
                    + "after \(inputEnd) bytes")
            }
            inputEnd += n
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if finished || buffer.count == 0 { return 0 }
        while true {
            guard try refill() else {
                throw TensorIOError.badData(
                    "\(name): truncated zstd frame: the compressed input ends after \(consumed) "
                    + "bytes, before the end of the frame")
            }
            var inBuffer = ZSTD_inBuffer(src: input.baseAddress, size: inputEnd, pos: inputPosition)
            var outBuffer = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
            let r = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
            inputPosition = inBuffer.pos
            if ZSTD_isError(r) != 0 { throw decodeError(r) }
            if r == 0 {
                finished = true
                try checkNothingFollows()
                return outBuffer.pos
            }
            if outBuffer.pos > 0 { return outBuffer.pos }
        }
    }

    private func decodeError(_ code: Int) -> TensorIOError {
        let reason = String(cString: ZSTD_getErrorName(code))
        let at = consumed + inputPosition
        if reason.lowercased().contains("checksum") {
            return .badData("\(name): zstd checksum mismatch: the decompressed data is corrupt "
                            + "(\(reason))")
        }
        return .badData("\(name): corrupt zstd frame near compressed byte \(at): \(reason)")
    }

    private func checkNothingFollows() throws {
        var extra = inputEnd - inputPosition
        inputPosition = inputEnd
        if extra == 0 {
            if try refill() {
                extra = inputEnd
                inputPosition = inputEnd
            }
        }
        guard extra == 0 else {
            let more = try source.drain(limit: 1 << 20)  // counted up to a megabyte, not read to its end
            throw TensorIOError.badData(
                "\(name): \(more >= 1 << 20 ? "at least " : "")\(extra + more) bytes of trailing data after the end of the zstd frame "
                + "(a tensor file is exactly one frame)")
        }
    }
}

/// Compresses everything written into one zstd frame with a checksum: single-threaded, so the
/// same input and level always give the same bytes.
final class ZstdEncoder {
    private let context: OpaquePointer
    private let output: UnsafeMutableRawBufferPointer
    private let sink: (UnsafeRawBufferPointer) throws -> Void
    private let name: String

    /// `pledgedSize` lets zstd size its window to the input and records the size in the frame.
    init(level: Int32, pledgedSize: UInt64?, name: String,
         sink: @escaping (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let context = ZSTD_createCCtx() else {
            throw TensorIOError.io("\(name): cannot allocate a zstd encoder")
        }
        self.context = context
        self.sink = sink
        self.name = name
        output = .allocate(byteCount: max(ZSTD_CStreamOutSize(), 1 << 20), alignment: 64)
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level))
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1))
        try check(ZSTD_CCtx_setParameter(context, ZSTD_c_nbWorkers, 0))
        if let pledgedSize { try check(ZSTD_CCtx_setPledgedSrcSize(context, pledgedSize)) }
    }

    deinit {
        ZSTD_freeCCtx(context)
        output.deallocate()
    }

    private func check(_ r: Int) throws {
        if ZSTD_isError(r) != 0 {
            throw TensorIOError.io("\(name): zstd compression failed: "
                                   + String(cString: ZSTD_getErrorName(r)))
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        var inBuffer = ZSTD_inBuffer(src: bytes.baseAddress, size: bytes.count, pos: 0)
        while inBuffer.pos < inBuffer.size {
            var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
            try check(ZSTD_compressStream2(context, &outBuffer, &inBuffer, ZSTD_e_continue))
            if outBuffer.pos > 0 { try sink(UnsafeRawBufferPointer(rebasing: output[0..<outBuffer.pos])) }
        }
    }

    /// Ends the frame (writes the last block and the checksum).
    func finish() throws {
        var inBuffer = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
        while true {
            var outBuffer = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
            let remaining = ZSTD_compressStream2(context, &outBuffer, &inBuffer, ZSTD_e_end)
            try check(remaining)
            if outBuffer.pos > 0 { try sink(UnsafeRawBufferPointer(rebasing: output[0..<outBuffer.pos])) }
            if remaining == 0 { return }
        }
    }
}
