import Foundation
import TensorIO
import TestSupport
import XCTest

/// Damaged zstd tensor files, one test each: both readers must name the problem.
final class ZstdCorruptTests: XCTestCase {
    private var dir: URL!
    private var good: [UInt8] = []

    override func setUpWithError() throws {
        dir = try Fixtures.temporaryDirectory()
        // Compressible data, so the frame holds compressed blocks as well as the header.
        let path = dir.appendingPathComponent("good.st.zst").path
        let count = 50_000
        let writer = try TensorFileWriter(
            path: path, entries: [TensorEntry(name: "w", dtype: .F32, shape: [count])],
            metadata: ["k": "v"])
        try writer.write("w", floats: (0..<count).map { Float($0 % 97) })
        try writer.finish()
        good = try readBytes(path)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func check(_ bytes: [UInt8], _ text: String, file: StaticString = #filePath,
                       line: UInt = #line) throws {
        let url = dir.appendingPathComponent("bad.st.zst")
        try write(bytes, to: url)
        assertBadData(text, file: file, line: line) { _ = try TensorFile(path: url.path) }
        assertBadData(text, file: file, line: line) { try streamAll(url.path) }
    }

    func testGoodFrameReads() throws {
        let url = dir.appendingPathComponent("ok.st.zst")
        try write(good, to: url)
        XCTAssertEqual(try TensorFile(path: url.path).floats("w")[96], 96)
        XCTAssertEqual(try streamAll(url.path).count, 1)
    }

    /// The first block header declares the reserved block type 3.
    func testBadFrame() throws {
        var bytes = good
        let headerLength = 4 + 1 + 4  // magic, descriptor (single segment, 4-byte size), size
        XCTAssertEqual(bytes[4], 0xA4, "frame descriptor: 4-byte content size, single segment, checksum")
        bytes[headerLength] |= 0x06
        try check(bytes, "corrupt zstd frame near compressed byte")
    }

    func testBadFrameHeaderReservedBit() throws {
        var bytes = good
        bytes[4] |= 0x08
        try check(bytes, "bad zstd frame header (reserved bit set)")
    }

    func testTruncatedFrame() throws {
        try check(Array(good.dropLast(20)),
                  "truncated zstd frame: the compressed input ends after \(good.count - 20) bytes, "
                      + "before the end of the frame")
    }

    func testTruncatedInFrameHeader() throws {
        try check(Array(good.prefix(6)),
                  "truncated zstd frame: the input ends inside the frame header after 6 bytes")
    }

    func testChecksumMismatchInChecksum() throws {
        var bytes = good
        bytes[bytes.count - 2] ^= 0x10
        try check(bytes, "zstd checksum mismatch: the decompressed data is corrupt")
    }

    /// A flipped bit in a literal of the payload decodes to different bytes, which only the
    /// checksum can notice.
    func testChecksumMismatchInPayload() throws {
        // A raw (stored) frame: incompressible bytes make zstd emit raw blocks.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let count = 4096
        let noise = (0..<count).map { _ -> Float in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(bitPattern: UInt32(truncatingIfNeeded: state >> 33) & 0x3FFF_FFFF)
        }
        let path = dir.appendingPathComponent("noise.st.zst").path
        let w = try TensorFileWriter(path: path, entries: [TensorEntry(name: "n", dtype: .F32, shape: [count])],
                                     metadata: [:])
        try w.write("n", floats: noise)
        try w.finish()
        var bytes = try readBytes(path)
        bytes[bytes.count - 100] ^= 0x01
        try check(bytes, "zstd checksum mismatch")
    }

    func testNoChecksumFlag() throws {
        var bytes = good
        bytes[4] &= ~0x04
        try check(bytes, "the zstd frame carries no content checksum; PruneKit requires one")
    }

    func testTrailingGarbage() throws {
        try check(good + Array("junk".utf8),
                  "4 bytes of trailing data after the end of the zstd frame (a tensor file is exactly one frame)")
    }

    func testSecondFrameIsRefused() throws {
        try check(good + good, "\(good.count) bytes of trailing data after the end of the zstd frame")
    }

    /// A valid frame whose content is not a safetensors file is reported as such.
    func testFrameWithTruncatedSafetensorsInside() throws {
        let dir2 = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir2) }
        let path = dir2.appendingPathComponent("t.st.zst").path
        try writeTensorFile(path: path, tensors: [(TensorEntry(name: "b", dtype: .U8, shape: [3]), [1, 2, 3])],
                            metadata: [:])
        XCTAssertEqual(try TensorFile(path: path).integers("b"), [1, 2, 3])
        XCTAssertEqual(try streamAll(path).map(\.1), [[1, 2, 3]])
    }
}
