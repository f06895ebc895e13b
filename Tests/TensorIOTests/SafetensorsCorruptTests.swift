import Foundation
import TensorIO
import TestSupport
import XCTest

/// Handcrafted corrupt files, one test each: the random-access reader must name the problem
/// exactly, and the stream reader must refuse the file too.
final class SafetensorsCorruptTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws { dir = try Fixtures.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private let one = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
    private let data8: [UInt8] = [0, 0, 128, 63, 0, 0, 0, 64]

    /// Writes `bytes`, expects `text` from TensorFile and `streamText` (default `text`) from
    /// the stream reader.
    private func check(_ bytes: [UInt8], _ text: String, stream streamText: String? = nil,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let url = dir.appendingPathComponent("bad.safetensors")
        try write(bytes, to: url)
        assertBadData(text, file: file, line: line) { _ = try TensorFile(path: url.path) }
        assertBadData(streamText ?? text, file: file, line: line) { try streamAll(url.path) }
    }

    func testValidBaseFileReads() throws {
        let url = dir.appendingPathComponent("ok.safetensors")
        try write(craftFile(one, data8), to: url)
        XCTAssertEqual(try TensorFile(path: url.path).floats("a"), [1, 2])
        XCTAssertEqual(try streamAll(url.path).map(\.1), [data8])
    }

    func testTruncatedInLength() throws {
        try check([56, 0, 0, 0, 0], "truncated: 5 bytes, fewer than the 8 of the header length")
    }

    func testEmptyFile() throws {
        try check([], "truncated: 0 bytes, fewer than the 8 of the header length")
    }

    func testTruncatedInHeader() throws {
        try check(Array(craftFile(one, data8).prefix(8 + 20)),
                  "header length 54 exceeds the 20 bytes that follow it",
                  stream: "truncated header: the length field says 54 bytes, the input ends after 20")
    }

    func testTruncatedInData() throws {
        try check(Array(craftFile(one, data8).dropLast(3)),
                  "truncated data: the tensors need 8 bytes after the header, the input holds 5",
                  stream: "truncated data: tensor 'a' needs 8 bytes at offset 0 of the data section, "
                      + "the input ends after 5")
    }

    func testHeaderLengthLargerThanFile() throws {
        try check(craftFile(one, data8, lengthField: 1_000_000),
                  "header length 1000000 exceeds the 62 bytes that follow it",
                  stream: "truncated header: the length field says 1000000 bytes, the input ends after 62")
    }

    func testHeaderLengthOver100MB() throws {
        try check(craftFile(one, data8, lengthField: 100_000_001),
                  "header length 100000001 exceeds the limit of 100000000 bytes")
    }

    func testHeaderLengthHuge() throws {
        try check(craftFile(one, data8, lengthField: UInt64.max),
                  "header length 18446744073709551615 exceeds the limit of 100000000 bytes")
    }

    func testHeaderNotStartingWithBrace() throws {
        try check(craftFile("[1, 2, 3]", []), "the header does not start with '{' (found 0x5b)")
    }

    func testBadJSON() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2] "data_offsets":[0,8]}}"#
        try check(craftFile(h, data8),
                  #"invalid header JSON at byte 32: expected ',' or '}' in an object, found '"'"#)
    }

    func testJSONTrailingText() throws {
        try check(craftFile(one + " x", data8),
                  "invalid header JSON at byte 55: unexpected 'x' after the end of the JSON object")
    }

    func testHeaderNotUTF8() throws {
        var h = Array(#"{"__metadata__":{"k":"v?"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.utf8)
        h[h.firstIndex(of: UInt8(ascii: "?"))!] = 0xC0  // an overlong lead byte
        try check(lengthPrefixed(h) + data8,
                  "the header is not valid UTF-8")
    }

    private func lengthPrefixed(_ h: [UInt8]) -> [UInt8] {
        withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) } + h
    }

    func testDuplicateTensorName() throws {
        let h = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        try check(craftFile(h, data8), "duplicate key 'a' in the header (byte 54)")
    }

    func testDuplicateMetadataKey() throws {
        let h = #"{"__metadata__":{"k":"1","k":"2"},"# + one.dropFirst()
        try check(craftFile(h, data8), "duplicate key 'k' in the header")
    }

    func testUnknownDtype() throws {
        let h = #"{"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#
        try check(craftFile(h, data8), "tensor 'a': unknown dtype 'F8_E4M3' (known: F64, F32")
    }

    func testNegativeShape() throws {
        let h = #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#
        try check(craftFile(h, data8),
                  "tensor 'a': shape must hold non-negative integers, found the number -2")
    }

    func testNonIntegerShape() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}"#
        try check(craftFile(h, data8),
                  "tensor 'a': shape must hold non-negative integers, found the number 2.0")
    }

    func testShapeNotAnArray() throws {
        let h = #"{"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}"#
        try check(craftFile(h, data8), "tensor 'a': shape is a string, not an array")
    }

    func testMissingField() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2]}}"#
        try check(craftFile(h, data8), "tensor 'a': missing data_offsets")
    }

    func testUnexpectedField() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"offset":0}}"#
        try check(craftFile(h, data8),
                  "tensor 'a': unexpected field 'offset' (expected dtype, shape, data_offsets)")
    }

    func testOffsetsOverlapping() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        try check(craftFile(h, data8 + data8),
                  "invalid data_offsets for 'b': [4, 12], expected [8, 16] (overlapping 'a' by 4 bytes)")
    }

    func testOffsetsWithHole() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#
        try check(craftFile(h, data8 + data8 + [0, 0, 0, 0]),
                  "invalid data_offsets for 'b': [12, 20], expected [8, 16] (a gap of 4 bytes after 'a')")
    }

    func testOffsetsNotStartingAtZero() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        try check(craftFile(h, data8 + [0, 0, 0, 0]),
                  "invalid data_offsets for 'a': [4, 12], expected [0, 8] (a gap of 4 bytes after the start)")
    }

    func testOffsetsOutOfRange() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551616]}}"#
        try check(craftFile(h, data8),
                  "tensor 'a': data_offsets value 18446744073709551616 is out of range")
    }

    func testOffsetsBeginAfterEnd() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#
        try check(craftFile(h, data8), "invalid data_offsets for 'a': [8, 0] (begin after end)")
    }

    func testByteCountNotElementsTimesSize() throws {
        let h = #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#
        try check(craftFile(h, data8),
                  "tensor 'a': data_offsets [0, 8] span 8 bytes, but shape [3] of F32 needs 3 × 4 = 12")
    }

    func testShapeProductOverflow() throws {
        let h = #"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#
        try check(craftFile(h, data8),
                  "tensor 'a': shape [4294967296, 4294967296] of F32 overflows")
    }

    func testTrailingBytes() throws {
        try check(craftFile(one, data8 + [1, 2, 3, 4]),
                  "4 trailing bytes after the last tensor (the tensors need 8 bytes after the header, "
                      + "the input holds 12)",
                  stream: "4 trailing bytes after the last tensor")
    }

    func testMetadataNonStringValue() throws {
        let h = #"{"__metadata__":{"k":1},"# + one.dropFirst()
        try check(craftFile(h, data8), "__metadata__ value for 'k' is the number 1, not a string")
    }

    func testMetadataNotAnObject() throws {
        let h = #"{"__metadata__":["k"],"# + one.dropFirst()
        try check(craftFile(h, data8), "__metadata__ is an array, not an object of strings")
    }

    func testBoolByteNotZeroOrOne() throws {
        let url = dir.appendingPathComponent("bool.safetensors")
        try write(craftFile(#"{"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#, [1, 7]), to: url)
        let file = try TensorFile(path: url.path)
        assertBadData("tensor 'm' (BOOL): BOOL element 1 has byte value 7, not 0 or 1") {
            _ = try file.integers("m")
        }
    }

    func testMissingFileIsMissingInput() {
        XCTAssertThrowsError(try TensorFile(path: dir.appendingPathComponent("nope").path)) {
            XCTAssertEqual(($0 as? TensorIOError)?.kind, .missingInput)
        }
    }
}
