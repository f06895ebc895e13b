import Foundation
import TensorIO
import TestSupport
import XCTest

// Helpers shared by the Safetensors*/Zstd* tests, then the half-precision conversion tests.

/// Asserts that `body` throws a TensorIOError of kind badData whose message contains `text`.
func assertBadData(_ text: String, file: StaticString = #filePath, line: UInt = #line,
                   _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("expected an error containing \"\(text)\", got none", file: file, line: line)
    } catch let e as TensorIOError {
        XCTAssertEqual(e.kind, .badData, "kind of: \(e.message)", file: file, line: line)
        XCTAssertTrue(e.message.contains(text), "message \"\(e.message)\" lacks \"\(text)\"",
                      file: file, line: line)
    } catch {
        XCTFail("unexpected error type \(error)", file: file, line: line)
    }
}

/// Reads every tensor of `path` through the stream reader.
@discardableResult
func streamAll(_ path: String) throws -> [(TensorEntry, [UInt8])] {
    let reader = try TensorStreamReader(path: path)
    var out: [(TensorEntry, [UInt8])] = []
    while let (entry, bytes) = try reader.next() { out.append((entry, bytes)) }
    XCTAssertNil(try reader.next(), "next() after the end")
    return out
}

/// A safetensors file from header text and data bytes (no padding, so offsets are exact).
func craftFile(_ header: String, _ data: [UInt8], lengthField: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var out: [UInt8] = []
    withUnsafeBytes(of: (lengthField ?? UInt64(h.count)).littleEndian) { out.append(contentsOf: $0) }
    return out + h + data
}

func write(_ bytes: [UInt8], to url: URL) throws {
    try Data(bytes).write(to: url)
}

func readBytes(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

extension Array where Element == UInt8 {
    init(hex: String) {
        var out: [UInt8] = []
        var it = hex.utf8.makeIterator()
        while let a = it.next(), let b = it.next() {
            out.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16) ?? 0)
        }
        self = out
    }
}

final class SafetensorsHalfPrecisionTests: XCTestCase {
    /// Every finite half and every infinity survives half → float → half; NaNs stay NaN.
    func testF16RoundTripsAllPatterns() {
        for bits in 0...UInt16.max {
            let f = f16ToFloat(bits)
            let back = floatToF16(f)
            if f.isNaN {
                XCTAssertTrue(Float16(bitPattern: back).isNaN, "pattern \(bits)")
            } else {
                XCTAssertEqual(back, bits, "pattern \(String(bits, radix: 16))")
            }
        }
    }

    /// bfloat16 → float is exact, and float → bfloat16 gives it back (NaN → 0xFFFF).
    func testBF16RoundTripsAllPatterns() {
        for bits in 0...UInt16.max {
            let f = bf16ToFloat(bits)
            XCTAssertEqual(f.bitPattern, UInt32(bits) << 16)
            XCTAssertEqual(floatToBF16(f), f.isNaN ? 0xFFFF : bits, "pattern \(String(bits, radix: 16))")
        }
    }

    /// Round to nearest even on the ties and their neighbours (values from the Python fixture
    /// script, checked there against torch).
    func testBF16RoundingCases() {
        let cases: [(UInt32, UInt16)] = [
            (0x3F80_8000, 0x3F80), (0x3F81_8000, 0x3F82), (0x3F80_8001, 0x3F81),
            (0x7F7F_FFFF, 0x7F80), (0x8000_0000, 0x8000), (0x0000_0001, 0x0000),
            (0xC2F6_E979, 0xC2F7), (0x7FC0_0001, 0xFFFF),
        ]
        for (src, want) in cases {
            XCTAssertEqual(floatToBF16(Float(bitPattern: src)), want, String(src, radix: 16))
        }
    }

    func testConvertToFloatBulkMatchesScalar() throws {
        let halves: [UInt16] = (0..<1000).map { UInt16(truncatingIfNeeded: $0 &* 6151) }
        // An odd byte offset: the conversion must not assume alignment.
        var raw = [UInt8](repeating: 0, count: 1 + 2 * halves.count)
        for (i, h) in halves.enumerated() {
            raw[1 + 2 * i] = UInt8(h & 0xFF)
            raw[2 + 2 * i] = UInt8(h >> 8)
        }
        for dtype in [DType.F16, .BF16] {
            var out = [Float](repeating: 0, count: halves.count)
            try raw.withUnsafeBytes { r in
                try out.withUnsafeMutableBufferPointer {
                    try convertToFloat(UnsafeRawBufferPointer(rebasing: r[1...]), dtype: dtype, into: $0)
                }
            }
            for (i, h) in halves.enumerated() {
                let want = dtype == .F16 ? f16ToFloat(h) : bf16ToFloat(h)
                XCTAssertEqual(out[i].bitPattern, want.bitPattern, "\(dtype) element \(i)")
            }
        }
    }

    func testConvertToFloatRejectsIntegersAndWrongSizes() {
        var out = [Float](repeating: 0, count: 2)
        assertBadData("cannot read I32 elements as floating-point") {
            try [UInt8](repeating: 0, count: 8).withUnsafeBytes { r in
                try out.withUnsafeMutableBufferPointer { try convertToFloat(r, dtype: .I32, into: $0) }
            }
        }
        assertBadData("7 bytes of F16 do not hold 2 elements") {
            try [UInt8](repeating: 0, count: 7).withUnsafeBytes { r in
                try out.withUnsafeMutableBufferPointer { try convertToFloat(r, dtype: .F16, into: $0) }
            }
        }
    }
}
