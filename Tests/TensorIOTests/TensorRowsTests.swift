import Foundation
import TensorIO
import TestSupport
import XCTest

/// Reading a few rows of a tensor (a batch's embedding rows) equals gathering them from the whole
/// tensor, for every stored type, plain or zstd, and in GGUF for every block type.
final class TensorRowsTests: XCTestCase {
    let ids = [3, 0, 3, 6]

    func gather(_ all: [Float], rows: Int, _ ids: [Int]) -> [Float] {
        let width = all.count / rows
        return ids.flatMap { all[($0 * width)..<(($0 + 1) * width)] }
    }

    func testRowsEqualTheGatheredTensorForEveryFloatTypePlainAndCompressed() throws {
        let dir = try Fixtures.temporaryDirectory()
        let values = (0..<(7 * 5)).map { Float($0) * 0.37 - 4 }
        for dtype in [DType.F32, .F16, .BF16, .F64] {
            for name in ["rows.st", "rows.st.zst"] {
                let path = dir.appendingPathComponent(name).path
                let writer = try TensorFileWriter(path: path, entries: [
                    TensorEntry(name: "e", dtype: dtype, shape: [7, 5]), TensorEntry(name: "b", dtype: .F32, shape: [5]),
                ], metadata: [:])
                try writer.write("e", floats: values)
                try writer.write("b", floats: Array(values.prefix(5)))
                try writer.finish()
                let file = try TensorFile(path: path)
                XCTAssertEqual(try file.floatRows("e", ids), gather(try file.floats("e"), rows: 7, ids), "\(dtype) \(name)")
                XCTAssertEqual(try file.floatRows("e", []), [])
                XCTAssertThrowsError(try file.floatRows("e", [7])) {
                    XCTAssertEqual(($0 as? TensorIOError)?.message, "\(path): row 7 of tensor 'e' is outside its 7 rows")
                }
                XCTAssertThrowsError(try file.floatRows("e", [-1]))
                XCTAssertThrowsError(try file.floatRows("b", [0])) {
                    XCTAssertEqual(($0 as? TensorIOError)?.message,
                                   "\(path): tensor 'b' has shape [5]; rows need two dimensions")
                }
            }
        }
    }

    func testGGUFRowsEqualTheGatheredDequantisedTensorForEveryBlockType() throws {
        let file = try GGUFFile(path: Fixtures.url("gguf/quant_blocks.gguf").path)
        var checked = 0
        for t in file.tensors where t.shape.count >= 2 && t.type.canDequantize {
            let rows = t.shape[0]
            let some = [rows - 1, 0, rows / 2, rows - 1]
            XCTAssertEqual(try file.dequantizeRows(t, some), gather(try file.dequantize(t), rows: rows, some),
                           "\(t.name) (\(t.type.name))")
            XCTAssertThrowsError(try file.dequantizeRows(t, [rows]))
            checked += 1
        }
        XCTAssertGreaterThan(checked, 5)
    }

    /// A tensor written in parts gives the bytes of the whole written at once; parts that fall
    /// short of or exceed its elements fail the write, and nothing is left at the path.
    func testTensorWrittenInPartsEqualsTheWholeAndMustBeExact() throws {
        let dir = try Fixtures.temporaryDirectory()
        let values = (0..<(9 * 4)).map { Float($0) * 0.61 - 7 }
        let entries = [TensorEntry(name: "e", dtype: .BF16, shape: [9, 4]), TensorEntry(name: "n", dtype: .F32, shape: [4])]
        func write(_ name: String, parts: [Range<Int>]?) throws -> String {
            let path = dir.appendingPathComponent(name).path
            let writer = try TensorFileWriter(path: path, entries: entries, metadata: ["m": "1"])
            if let parts {
                try values.withUnsafeBufferPointer { all in
                    try writer.write("e") { part in for r in parts { try part(UnsafeBufferPointer(rebasing: all[r])) } }
                }
            } else {
                try writer.write("e", floats: values)
            }
            try writer.write("n", floats: [1, 2, 3, 4])
            try writer.finish()
            return path
        }
        let whole = try Data(contentsOf: URL(fileURLWithPath: try write("whole.st", parts: nil)))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: try write("parts.st", parts: [0..<8, 8..<8, 8..<36]))), whole)
        for (name, parts, message) in [("short.st", [0..<20], "parts hold 20 of its 36 elements"),
                                       ("long.st", [0..<36, 0..<1], "parts exceed its 36 elements")] {
            XCTAssertThrowsError(try write(name, parts: parts)) {
                XCTAssertEqual(($0 as? TensorIOError)?.message, "\(dir.appendingPathComponent(name).path): tensor 'e': \(message)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent(name).path))
        }
    }

    /// A GGUF tensor written in parts (F32, F16, Q8_0) gives the bytes of the whole written at once; parts that fall
    /// short, exceed it or split a Q8_0 block fail the write, and nothing is left at the path.
    func testGGUFTensorWrittenInPartsEqualsTheWholeAndMustBeExact() throws {
        let dir = try Fixtures.temporaryDirectory()
        let values = (0..<(3 * 64)).map { Float($0) * 0.37 - 20 }
        for type in [GGMLType.F32, .F16, .Q8_0] {
            func write(_ name: String, parts: [Range<Int>]?) throws -> String {
                let path = dir.appendingPathComponent("\(type)-\(name)").path
                let writer = try GGUFWriter(path: path, metadata: [("general.architecture", .string("llama"))], tensors: [
                    .init(name: "e", shape: [3, 64], type: type), .init(name: "n", shape: [4], type: .F32)])
                if let parts {
                    try writer.write("e") { emit in for r in parts { try emit(Array(values[r])) } }
                } else {
                    try writer.write("e", values)
                }
                try writer.write("n", [1, 2, 3, 4])
                try writer.finish()
                return path
            }
            let whole = try Data(contentsOf: URL(fileURLWithPath: try write("whole.gguf", parts: nil)))
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: try write("parts.gguf", parts: [0..<64, 64..<64, 64..<192]))),
                           whole, "\(type)")
            var bad = [("short.gguf", [0..<128], "parts hold 128 of its 192 values"),
                       ("long.gguf", [0..<192, 0..<64], "a part of 64 values after 192 does not fit its 192 in blocks of \(type.blockSize)")]
            if type == .Q8_0 {
                bad.append(("split.gguf", [0..<16, 16..<192], "a part of 16 values after 0 does not fit its 192 in blocks of 32"))
            }
            for (name, parts, message) in bad {
                XCTAssertThrowsError(try write(name, parts: parts)) {
                    XCTAssertEqual(($0 as? TensorIOError)?.message, "GGUF writer: tensor e: \(message)")
                }
                XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("\(type)-\(name)").path))
            }
        }
    }
}
