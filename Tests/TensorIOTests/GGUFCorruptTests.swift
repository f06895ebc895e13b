import Foundation
import TensorIO
import TestSupport
import XCTest

/// Handcrafted damaged GGUF files, one test each (as llama.cpp's tests/test-gguf.cpp): each is
/// refused with one line naming the problem.
final class GGUFCorruptTests: XCTestCase {
    /// Builds GGUF bytes field by field.
    struct Builder {
        var bytes: [UInt8] = []
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
        mutating func string(_ s: String) {
            u64(UInt64(s.utf8.count))
            bytes += Array(s.utf8)
        }
        mutating func kvU32(_ key: String, _ v: UInt32) {
            string(key)
            u32(4)
            u32(v)
        }
        mutating func tensor(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64) {
            string(name)
            u32(UInt32(dims.count))
            for d in dims { u64(d) }
            u32(type)
            u64(offset)
        }
        mutating func pad(to alignment: Int) {
            while bytes.count % alignment != 0 { bytes.append(0) }
        }
    }

    /// A valid file: one key, two F32 tensors of 8 elements.
    func valid() -> Builder {
        var b = Builder()
        b.u32(0x4655_4747)
        b.u32(3)
        b.u64(2)
        b.u64(1)
        b.kvU32("general.alignment", 32)
        b.tensor("a", dims: [8], type: 0, offset: 0)
        b.tensor("b", dims: [4, 2], type: 0, offset: 32)
        b.pad(to: 32)
        b.bytes += [UInt8](repeating: 0, count: 64)
        return b
    }

    func header(version: UInt32 = 3, tensors: UInt64, kvs: UInt64) -> Builder {
        var b = Builder()
        b.u32(0x4655_4747)
        b.u32(version)
        b.u64(tensors)
        b.u64(kvs)
        return b
    }

    func expectError(_ bytes: [UInt8], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try Fixtures.temporaryDirectory()
        let path = dir.appendingPathComponent("bad.gguf").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            _ = try GGUFFile(path: path)
            XCTFail("accepted a file that should fail with '\(fragment)'", file: file, line: line)
        } catch let e as TensorIOError {
            XCTAssertEqual(e.kind, .badData, file: file, line: line)
            XCTAssertTrue(e.message.contains(fragment), "'\(e.message)' lacks '\(fragment)'", file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), file: file, line: line)
        }
    }

    func testValidFileOpens() throws {
        let dir = try Fixtures.temporaryDirectory()
        let path = dir.appendingPathComponent("ok.gguf").path
        try Data(valid().bytes).write(to: URL(fileURLWithPath: path))
        let f = try GGUFFile(path: path)
        XCTAssertEqual(f.tensors.map(\.name), ["a", "b"])
        XCTAssertEqual(f.tensor(named: "b")?.shape, [2, 4])
        XCTAssertEqual(try f.dequantize(f.tensors[1]), [Float](repeating: 0, count: 8))
    }

    func testBadMagic() throws {
        var b = valid()
        b.bytes[0] = UInt8(ascii: "X")
        try expectError(b.bytes, "not a GGUF file (bad magic number)")
    }

    func testVersion1() throws { try expectError(header(version: 1, tensors: 0, kvs: 0).bytes, "GGUF version 1 is not supported") }
    func testVersion4() throws { try expectError(header(version: 4, tensors: 0, kvs: 0).bytes, "GGUF version 4 is not supported") }

    func testHugeTensorCount() throws {
        try expectError(header(tensors: UInt64.max / 2, kvs: 0).bytes, "tensor count")
    }

    func testHugeKeyValueCount() throws {
        try expectError(header(tensors: 0, kvs: 1 << 40).bytes, "key-value count")
    }

    func testUnknownValueType() throws {
        var b = header(tensors: 0, kvs: 1)
        b.string("x")
        b.u32(13)
        b.u32(0)
        try expectError(b.bytes, "'x' has unknown value type 13")
    }

    func testStringLengthBeyondFile() throws {
        var b = header(tensors: 0, kvs: 1)
        b.u64(1 << 50)
        b.bytes += [UInt8](repeating: 0, count: 16)
        try expectError(b.bytes, "metadata key has length 1125899906842624, beyond")
    }

    func testArrayCountBeyondFile() throws {
        var b = header(tensors: 0, kvs: 1)
        b.string("arr")
        b.u32(9)
        b.u32(4)
        b.u64(1 << 40)
        try expectError(b.bytes, "array length of 'arr'")
    }

    func testDuplicateKey() throws {
        var b = header(tensors: 0, kvs: 2)
        b.kvU32("k", 1)
        b.kvU32("k", 2)
        try expectError(b.bytes, "duplicate metadata key 'k'")
    }

    func testBadAlignment() throws {
        var b = header(tensors: 0, kvs: 1)
        b.kvU32("general.alignment", 3)
        try expectError(b.bytes, "general.alignment must be a power of two")
        var z = header(tensors: 0, kvs: 1)
        z.kvU32("general.alignment", 0)
        try expectError(z.bytes, "general.alignment must be a power of two")
    }

    func testTooManyDimensions() throws {
        var b = header(tensors: 1, kvs: 0)
        b.tensor("t", dims: [1, 1, 1, 1, 1], type: 0, offset: 0)
        b.pad(to: 32)
        try expectError(b.bytes, "tensor 't' has 5 dimensions")
    }

    func testDimensionProductOverflows() throws {
        var b = header(tensors: 1, kvs: 0)
        b.tensor("t", dims: [1 << 40, 1 << 40], type: 0, offset: 0)
        b.pad(to: 32)
        try expectError(b.bytes, "tensor 't': element count overflows")
    }

    func testDuplicateTensorName() throws {
        var b = header(tensors: 2, kvs: 0)
        b.tensor("t", dims: [8], type: 0, offset: 0)
        b.tensor("t", dims: [8], type: 0, offset: 32)
        b.pad(to: 32)
        b.bytes += [UInt8](repeating: 0, count: 64)
        try expectError(b.bytes, "duplicate tensor name 't'")
    }

    func testUnknownTensorType() throws {
        var b = header(tensors: 1, kvs: 0)
        b.tensor("t", dims: [8], type: 99, offset: 0)
        try expectError(b.bytes, "tensor 't' has unknown ggml type 99")
    }

    func testUnalignedOffset() throws {
        var b = header(tensors: 1, kvs: 0)
        b.tensor("t", dims: [8], type: 0, offset: 4)
        b.pad(to: 32)
        b.bytes += [UInt8](repeating: 0, count: 64)
        try expectError(b.bytes, "offset 4 is not a multiple of the alignment 32")
    }

    func testRowNotMultipleOfBlock() throws {
        var b = header(tensors: 1, kvs: 0)
        b.tensor("t", dims: [31], type: 8, offset: 0)
        b.pad(to: 32)
        try expectError(b.bytes, "row length 31 is not a multiple of the Q8_0 block size 32")
    }

    func testDataBeyondEndOfFile() throws {
        var b = valid()
        b.bytes.removeLast(8)
        try expectError(b.bytes, "data of tensor 'b' [32, 64) lies beyond the end of the data section")
    }

    func testOverlappingData() throws {
        var b = header(tensors: 2, kvs: 0)
        b.tensor("a", dims: [16], type: 0, offset: 0)
        b.tensor("b", dims: [8], type: 0, offset: 32)
        b.pad(to: 32)
        b.bytes += [UInt8](repeating: 0, count: 96)
        try expectError(b.bytes, "data of tensors 'a' and 'b' overlap")
    }

    func testTruncatedAtEverySection() throws {
        let full = valid().bytes
        // In the fixed header, the key-values, the tensor infos.
        for cut in [3, 10, 20, 30, 60, 80, 100] where cut < full.count {
            try expectError(Array(full.prefix(cut)), "truncated")
        }
    }

    func testUnsupportedTypeIsNamedOnDequantize() throws {
        var b = header(tensors: 1, kvs: 0)
        b.tensor("t", dims: [256], type: 11, offset: 0)
        b.pad(to: 32)
        b.bytes += [UInt8](repeating: 0, count: 110)
        let dir = try Fixtures.temporaryDirectory()
        let path = dir.appendingPathComponent("q3.gguf").path
        try Data(b.bytes).write(to: URL(fileURLWithPath: path))
        let f = try GGUFFile(path: path)
        XCTAssertThrowsError(try f.dequantize(f.tensors[0])) {
            XCTAssertTrue("\($0)".contains("tensor 't' has type Q3_K, which PruneKit cannot dequantize"), "\($0)")
        }
    }
}
