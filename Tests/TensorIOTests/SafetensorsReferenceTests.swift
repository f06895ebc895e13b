import Foundation
import TensorIO
import TestSupport
import XCTest

/// Files from the Python safetensors library read exactly; Swift output byte-identical to the
/// library's (fixtures from scripts/reference/safetensors_fixtures.py).
final class SafetensorsReferenceTests: XCTestCase {
    private struct Expected: Decodable {
        struct Tensor: Decodable {
            var name: String
            var dtype: String
            var shape: [Int]
            var hex: String
            var values: [Value]
        }
        /// A float as hex-float text, or an integer.
        enum Value: Decodable {
            case float(String), int(Int)
            init(from decoder: Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let i = try? c.decode(Int.self) { self = .int(i) } else { self = .float(try c.decode(String.self)) }
            }
        }
        var metadata: [String: String]
        var tensors: [Tensor]
    }

    /// Python's float.hex() text ("-0x1.2ca2e8p-3", "inf", "nan") as a Double.
    private func double(_ text: String) -> Double? {
        switch text {
        case "nan": return .nan
        case "inf": return .infinity
        case "-inf": return -.infinity
        default: return Double(text)
        }
    }

    private func checkPythonFile(_ path: String) throws {
        let expected = try JSONDecoder().decode(
            Expected.self, from: Data(contentsOf: Fixtures.url("safetensors/python_written.json")))
        let file = try TensorFile(path: path)
        XCTAssertEqual(file.metadata, expected.metadata)
        XCTAssertEqual(Set(file.header.entries.map(\.name)), Set(expected.tensors.map(\.name)))
        let streamed = Dictionary(uniqueKeysWithValues: try streamAll(path).map { ($0.0.name, $0) })
        XCTAssertEqual(streamed.keys.sorted(), file.header.entries.map(\.name).sorted())
        for t in expected.tensors {
            let entry = try XCTUnwrap(file.header.entry(t.name))
            XCTAssertEqual(entry, TensorEntry(name: t.name, dtype: try XCTUnwrap(DType(rawValue: t.dtype)),
                                              shape: t.shape))
            let bytes = try file.withBytes(t.name) { Array($0) }
            XCTAssertEqual(bytes, [UInt8](hex: t.hex), t.name)
            XCTAssertEqual(streamed[t.name]?.0, entry)
            XCTAssertEqual(streamed[t.name]?.1, bytes, t.name)
            switch entry.dtype {
            case .F64, .F32, .F16, .BF16:
                let want = t.values.map { v -> Double in
                    if case .float(let s) = v { return double(s) ?? -1 }
                    return -1
                }
                let got = try file.doubles(t.name)
                XCTAssertEqual(got.count, want.count, t.name)
                for (g, w) in zip(got, want) {
                    XCTAssertTrue(g.bitPattern == w.bitPattern || (g.isNaN && w.isNaN), "\(t.name): \(g) vs \(w)")
                }
                let floats = try file.floats(t.name)
                XCTAssertEqual(floats.count, want.count)
                for (g, w) in zip(floats, want) where !w.isNaN {
                    XCTAssertEqual(g.bitPattern, Float(w).bitPattern, t.name)
                }
            default:
                let want = t.values.compactMap { v -> Int? in
                    if case .int(let i) = v { return i }
                    return nil
                }
                XCTAssertEqual(try file.integers(t.name), want, t.name)
            }
        }
        XCTAssertEqual(file.header.entry("step")?.shape, [])
        XCTAssertEqual(file.header.entry("nothing")?.elementCount, 0)
    }

    func testReadsPythonWrittenFile() throws {
        try checkPythonFile(Fixtures.url("safetensors/python_written.safetensors").path)
    }

    /// The same file compressed by the zstd command-line tool.
    func testReadsZstdCommandLineOutput() throws {
        let path = Fixtures.url("safetensors/python_written.safetensors.zst").path
        XCTAssertTrue(try isZstdFile(path: path))
        try checkPythonFile(path)
    }

    /// The fixture script's bit patterns (F32 sources of the BF16 and F16 tensors).
    private let bf16Sources: [UInt32] = [
        0x3F80_0000, 0x3F80_8000, 0x3F81_8000, 0x3F80_8001, 0x7F7F_FFFF, 0x8000_0000, 0xFF80_0000,
        0x0000_0001, 0x7FC0_0001, 0xFF81_2345, 0xC2F6_E979,
    ]
    private let f16Sources: [UInt32] = [
        0x3F80_0000, 0x3F80_1000, 0x3F80_3000, 0x477F_E000, 0x477F_F000, 0x3380_0000, 0x3300_0000,
        0x3200_0000, 0xFF80_0000, 0x7FC0_0000, 0xFF81_2345, 0xBDCC_CCCD,
    ]

    /// Writes the golden tensors the way a tool would (floats converted by the writer).
    private func writeGolden(_ path: String, compress: Bool) throws {
        let entries = [
            TensorEntry(name: "ids", dtype: .I64, shape: [3]),
            TensorEntry(name: "weight.f64", dtype: .F64, shape: [2]),
            TensorEntry(name: "a.f32", dtype: .F32, shape: [2, 3]),
            TensorEntry(name: "scalar", dtype: .F32, shape: []),
            TensorEntry(name: "i32", dtype: .I32, shape: [2]),
            TensorEntry(name: "bf16", dtype: .BF16, shape: [bf16Sources.count]),
            TensorEntry(name: "empty", dtype: .F16, shape: [0, 4]),
            TensorEntry(name: "f16", dtype: .F16, shape: [f16Sources.count]),
            TensorEntry(name: "i16", dtype: .I16, shape: [2]),
            TensorEntry(name: "i8", dtype: .I8, shape: [2]),
            TensorEntry(name: "u8", dtype: .U8, shape: [3]),
            TensorEntry(name: "mask", dtype: .BOOL, shape: [4]),
        ]
        let metadata = ["note": "quote\" backslash\\ newline\n tab\t ctrl\u{01} del\u{7f} é 漢 slash/"]
        let w = try TensorFileWriter(path: path, entries: entries, metadata: metadata, compress: compress)
        try w.write("ids", integers: [-1, 0, (1 << 40) + 7])
        try w.write("weight.f64", doubles: [1.0 / 3.0, -2.5])
        try w.write("a.f32", floats: (0..<6).map { Float($0) * 0.25 - 1 })
        try w.write("scalar", floats: [3.5])
        try w.write("i32", integers: [Int(Int32.min), Int(Int32.max)])
        try w.write("bf16", floats: bf16Sources.map(Float.init(bitPattern:)))
        try w.write("empty", floats: [])
        try w.write("f16", floats: f16Sources.map(Float.init(bitPattern:)))
        try w.write("i16", integers: [-32768, 32767])
        try w.write("i8", integers: [-128, 127])
        try w.write("u8", integers: [0, 1, 255])
        try w.write("mask", integers: [1, 0, 0, 1])
        try w.finish()
        // For `safetensors_fixtures.py --verify`: keep a copy of what Swift wrote.
        if let keep = ProcessInfo.processInfo.environment["PRUNEKIT_KEEP_GOLDEN"], !keep.isEmpty {
            let name = "swift-" + URL(fileURLWithPath: path).lastPathComponent
            try Data(readBytes(path)).write(to: URL(fileURLWithPath: keep).appendingPathComponent(name))
        }
    }

    func testGoldenBytesMatchSafetensorsLibrary() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("golden.safetensors").path
        try writeGolden(path, compress: false)
        let want = try readBytes(Fixtures.url("safetensors/golden.safetensors").path)
        let got = try readBytes(path)
        XCTAssertEqual(got.count, want.count)
        if let i = zip(got, want).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
            XCTFail("first differing byte at \(i): \(got[i]) vs \(want[i])")
        }
        XCTAssertEqual(got, want)
    }

    /// The compressed golden equals `zstd -3 --check` output of the library's bytes (same
    /// libzstd level and frame parameters), and reads back to the plain golden.
    func testGoldenZstdBytesMatchZstdTool() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("golden.st.zst").path
        try writeGolden(path, compress: true)
        XCTAssertEqual(try readBytes(path),
                       try readBytes(Fixtures.url("safetensors/golden.safetensors.zst").path))
        let plain = try TensorFile(path: Fixtures.url("safetensors/golden.safetensors").path)
        let packed = try TensorFile(path: path)
        XCTAssertEqual(packed.header.entries, plain.header.entries)
        for e in plain.header.entries {
            XCTAssertEqual(try packed.withBytes(e.name) { Array($0) }, try plain.withBytes(e.name) { Array($0) })
        }
    }
}
