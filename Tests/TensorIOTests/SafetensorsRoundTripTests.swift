import Foundation
import TensorIO
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Writing then reading every dtype, plain and zstd, from a file and through a pipe; the
/// writer's refusals and its atomicity.
final class SafetensorsRoundTripTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws { dir = try Fixtures.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// One tensor of every dtype (values exactly representable in each), a scalar and an empty one.
    private let entries: [TensorEntry] = [
        TensorEntry(name: "f64", dtype: .F64, shape: [2, 3]),
        TensorEntry(name: "f32", dtype: .F32, shape: [3, 2]),
        TensorEntry(name: "f16", dtype: .F16, shape: [5]),
        TensorEntry(name: "bf16", dtype: .BF16, shape: [1, 5]),
        TensorEntry(name: "i64", dtype: .I64, shape: [3]),
        TensorEntry(name: "i32", dtype: .I32, shape: [3]),
        TensorEntry(name: "i16", dtype: .I16, shape: [3]),
        TensorEntry(name: "i8", dtype: .I8, shape: [3]),
        TensorEntry(name: "u8", dtype: .U8, shape: [3]),
        TensorEntry(name: "bool", dtype: .BOOL, shape: [2, 2]),
        TensorEntry(name: "scalar", dtype: .F32, shape: []),
        TensorEntry(name: "empty", dtype: .BF16, shape: [0, 7]),
    ]
    private let floatValues: [String: [Double]] = [
        "f64": [1.0 / 3.0, -2.5, 1e300, -0.0, 5e-324, .infinity],
        "f32": [0.5, -3, 65536.5, 0x1p-130, -.infinity, 7],
        "f16": [1, -0.5, 65504, 0x1p-14, 0x1p-24],
        "bf16": [1, -2, 0x1.fep127, 0.0078125, -0.0],
        "scalar": [42.25],
        "empty": [],
    ]
    private let integerValues: [String: [Int]] = [
        "i64": [Int.min, 0, Int.max], "i32": [Int(Int32.min), -1, Int(Int32.max)],
        "i16": [-32768, 5, 32767], "i8": [-128, 0, 127], "u8": [0, 128, 255],
        "bool": [1, 0, 0, 1],
    ]
    private let metadata = ["producer": "tests", "quote": "a \"b\" \\ c\nd", "unicode": "é漢"]

    private func writeAll(_ path: String, compress: Bool?) throws {
        let writer = try TensorFileWriter(path: path, entries: entries, metadata: metadata,
                                          compress: compress)
        for e in entries {
            if let f = floatValues[e.name] {
                if e.dtype == .F64 { try writer.write(e.name, doubles: f) }
                else { try writer.write(e.name, floats: f.map(Float.init)) }
            } else if let i = integerValues[e.name] {
                try writer.write(e.name, integers: i)
            }
        }
        try writer.finish()
    }

    private func checkAll(_ tensors: [(TensorEntry, [UInt8])], file: TensorFile) throws {
        XCTAssertEqual(tensors.map(\.0), entries)
        for (e, bytes) in tensors {
            XCTAssertEqual(try file.withBytes(e.name) { Array($0) }, bytes, e.name)
            if let f = floatValues[e.name] {
                XCTAssertEqual(try file.doubles(e.name).map(\.bitPattern), f.map(\.bitPattern), e.name)
                XCTAssertEqual(try file.floats(e.name).map(\.bitPattern), f.map { Float($0).bitPattern })
            } else {
                XCTAssertEqual(try file.integers(e.name), integerValues[e.name], e.name)
            }
        }
        XCTAssertEqual(file.metadata, metadata)
    }

    func testEveryDtypePlainAndZstdFromFiles() throws {
        for compress in [false, true] {
            let path = dir.appendingPathComponent(compress ? "all.st.zst" : "all.safetensors").path
            try writeAll(path, compress: nil)  // the name decides
            XCTAssertEqual(try isZstdFile(path: path), compress)
            let file = try TensorFile(path: path)
            XCTAssertEqual(file.header.entries, entries)
            try checkAll(try streamAll(path), file: file)
            // Same inputs, byte-identical output.
            let again = dir.appendingPathComponent("again").path
            try writeAll(again, compress: compress)
            XCTAssertEqual(try readBytes(again), try readBytes(path))
        }
    }

    func testHeaderIsPaddedToEightBytesWithMetadataFirst() throws {
        let path = dir.appendingPathComponent("p.safetensors").path
        try writeAll(path, compress: false)
        let bytes = try readBytes(path)
        let n = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(n % 8, 0)
        let text = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
        XCTAssertTrue(text.hasPrefix(#"{"__metadata__":{"producer":"tests","quote":"a \"b\" \\ c\nd","#),
                      text)
        XCTAssertTrue(text.contains(#""f64":{"dtype":"F64","shape":[2,3],"data_offsets":[0,48]}"#))
    }

    /// A pipe with a writer thread: the stream reader and the random-access reader (which reads
    /// the pipe into memory) both see every tensor, for plain and zstd bytes.
    func testEveryDtypeThroughAPipe() throws {
        for compress in [false, true] {
            let path = dir.appendingPathComponent("pipe-src").path
            try writeAll(path, compress: compress)
            let bytes = try readBytes(path)
            let reference = try TensorFile(path: path)
            for random in [false, true] {
                var fds: [Int32] = [0, 0]
                XCTAssertEqual(pipe(&fds), 0)
                let writeEnd = fds[1]
                let feeder = Thread {
                    bytes.withUnsafeBytes { raw in
                        var off = 0
                        // Small uneven pieces, to cross every boundary.
                        while off < raw.count {
                            let n = Glibc.write(writeEnd, raw.baseAddress! + off, min(777, raw.count - off))
                            if n <= 0 { break }
                            off += n
                        }
                    }
                    close(writeEnd)
                }
                feeder.start()
                if random {
                    let file = try TensorFile(path: "/dev/fd/\(fds[0])")
                    try checkAll(try entries.map { e in (e, try reference.withBytes(e.name) { Array($0) }) },
                                 file: file)
                } else {
                    let reader = try TensorStreamReader(fileDescriptor: fds[0], name: "pipe")
                    var got: [(TensorEntry, [UInt8])] = []
                    while let t = try reader.next() { got.append(t) }
                    try checkAll(got, file: reference)
                }
                close(fds[0])
            }
        }
    }

    func testWriterRefusesWrongOrderSizeTypeAndRange() throws {
        let path = dir.appendingPathComponent("w.safetensors").path
        let entries = [TensorEntry(name: "a", dtype: .F32, shape: [2]),
                       TensorEntry(name: "b", dtype: .I8, shape: [2])]
        let writer = try TensorFileWriter(path: path, entries: entries, metadata: [:])
        assertBadData("tensor 'b' (tensor 2) written out of order: expected 'a' (tensor 1 of 2)") {
            try writer.write("b", integers: [1, 2])
        }
        assertBadData("tensor 'c' (not declared) written out of order: expected 'a'") {
            try writer.write("c", floats: [1, 2])
        }
        assertBadData("tensor 'a' has 12 bytes, but shape [2] of F32 needs 8") {
            try writer.write("a", floats: [1, 2, 3])
        }
        assertBadData("tensor 'a' is F32; cannot write integer values to it") {
            try writer.write("a", integers: [1, 2])
        }
        try writer.write("a", floats: [1, 2])
        assertBadData("tensor 'b': value 300 at index 1 does not fit in I8") {
            try writer.write("b", integers: [1, 300])
        }
        assertBadData("finished after 1 of 2 tensors (next: 'b')") { try writer.finish() }
        try writer.write("b", integers: [-1, 2])
        assertBadData("tensor 'a' written after all 2 tensors") { try writer.write("a", floats: [1, 2]) }
        try writer.finish()
        XCTAssertEqual(try TensorFile(path: path).integers("b"), [-1, 2])
    }

    func testWriterRefusesDuplicateNames() {
        let e = TensorEntry(name: "a", dtype: .F32, shape: [1])
        assertBadData("duplicate tensor name 'a'") {
            _ = try TensorFileWriter(path: self.dir.appendingPathComponent("d").path,
                                     entries: [e, e], metadata: [:])
        }
    }

    func testAbortLeavesNoFileAndNoTemporary() throws {
        let path = dir.appendingPathComponent("new.safetensors").path
        let writer = try TensorFileWriter(path: path, entries: entries, metadata: [:])
        let temporary = try XCTUnwrap(writer.temporaryPath)
        XCTAssertTrue(FileManager.default.fileExists(atPath: temporary))
        XCTAssertTrue(registeredTemporaryPaths().contains(temporary))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "target appears before finish")
        try writer.write("f64", doubles: floatValues["f64"]!)
        writer.abort()
        XCTAssertFalse(FileManager.default.fileExists(atPath: temporary))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertFalse(registeredTemporaryPaths().contains(temporary))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])
    }

    func testAbortAndDeinitLeaveAnExistingTargetUntouched() throws {
        let path = dir.appendingPathComponent("old.safetensors").path
        let old: [UInt8] = Array("the complete old file".utf8)
        try write(old, to: URL(fileURLWithPath: path))
        var temporary: String?
        do {
            let writer = try TensorFileWriter(path: path, entries: entries, metadata: [:])
            temporary = writer.temporaryPath
            try writer.write("f64", doubles: floatValues["f64"]!)
            // Dropped without finish(), as when a tool throws midway.
        }
        XCTAssertEqual(try readBytes(path), old)
        XCTAssertFalse(FileManager.default.fileExists(atPath: try XCTUnwrap(temporary)))
        let writer = try TensorFileWriter(path: path, entries: entries, metadata: [:])
        writer.abort()
        XCTAssertEqual(try readBytes(path), old)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["old.safetensors"])
    }

    func testFinishReplacesTargetAndRemovesTemporary() throws {
        let path = dir.appendingPathComponent("x.st.zst").path
        try write(Array("old".utf8), to: URL(fileURLWithPath: path))
        try writeAll(path, compress: nil)
        XCTAssertTrue(try isZstdFile(path: path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["x.st.zst"])
        XCTAssertEqual(try TensorFile(path: path).integers("u8"), [0, 128, 255])
    }

    func testWriterIntoMissingFolderFailsWithIOError() {
        XCTAssertThrowsError(try TensorFileWriter(
            path: dir.appendingPathComponent("no/such/folder/x.safetensors").path,
            entries: entries, metadata: [:])) {
            XCTAssertEqual(($0 as? TensorIOError)?.kind, .io)
            XCTAssertTrue("\($0)".contains("no such directory"), "\($0)")
        }
    }

    /// Larger than TensorFile.memoryLimit once decompressed: goes through the temporary-file path.
    func testLargeZstdFileSpillsAndReadsBack() throws {
        let count = (TensorFile.memoryLimit / 4) + 1000
        let values = (0..<count).map { Float($0 % 1000) * 0.5 }
        let path = dir.appendingPathComponent("big.st.zst").path
        let writer = try TensorFileWriter(path: path, entries: [TensorEntry(name: "w", dtype: .F32, shape: [count])],
                                          metadata: [:], level: 1)
        try writer.write("w", floats: values)
        try writer.finish()
        let file = try TensorFile(path: path)
        XCTAssertEqual(try file.floats("w"), values)
    }
}

/// The interrupt handler removes registered temporaries and exits 128 + signal.
final class SafetensorsInterruptTests: XCTestCase {
    func testSigtermUnlinksTemporaryAndExits143() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("out.safetensors").path
        try write(Array("old".utf8), to: URL(fileURLWithPath: path))
        installInterruptCleanup()
        let writer = try TensorFileWriter(
            path: path, entries: [TensorEntry(name: "a", dtype: .F32, shape: [4])], metadata: [:])
        let temporary = try XCTUnwrap(writer.temporaryPath)
        XCTAssertTrue(FileManager.default.fileExists(atPath: temporary))
        // The child only raises the signal (async-signal-safe after fork); its handler does the rest.
        let child = fork()
        if child == 0 {
            raise(SIGTERM)
            _exit(1)  // not reached when the handler works
        }
        XCTAssertGreaterThan(child, 0)
        var status: Int32 = 0
        XCTAssertEqual(waitpid(child, &status, 0), child)
        let exited = (status & 0x7F) == 0
        XCTAssertTrue(exited, "the child died of a signal instead of exiting")
        XCTAssertEqual((status >> 8) & 0xFF, 143)
        XCTAssertFalse(FileManager.default.fileExists(atPath: temporary))
        XCTAssertEqual(try readBytes(path), Array("old".utf8))
        writer.abort()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["out.safetensors"])
    }
}
