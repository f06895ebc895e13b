import Foundation
import TensorIO
import TestSupport
import XCTest

/// A 7B model is read tensor by tensor from a mapped file, and its gradient sums live in a mapped
/// temporary file: the pages a read or an update touched must leave the process's resident memory
/// when it ends, or the peak RSS of every tool would be the size of its files.
final class ResidentMemoryTests: XCTestCase {
    /// The process's resident pages of mapped files (file-backed and shared memory), in bytes.
    func mappedResident() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        var kb = 0
        for line in status.split(separator: "\n") where line.hasPrefix("RssFile:") || line.hasPrefix("RssShmem:") {
            kb += Int(line.split(separator: " ")[1]) ?? 0
        }
        return kb * 1024
    }

    func testReadingTensorsOfAMappedFileLeavesNoPagesResident() throws {
        let path = try Fixtures.temporaryDirectory().appendingPathComponent("big.st").path
        let n = 4 << 20  // 16 MB a tensor
        let names = (0..<4).map { "t\($0)" }
        let writer = try TensorFileWriter(path: path, entries: names.map { TensorEntry(name: $0, dtype: .F32, shape: [n]) },
                                          metadata: [:], compress: false)
        for (k, name) in names.enumerated() { try writer.write(name, floats: (0..<n).map { Float($0 % 1000 + k) }) }
        try writer.finish()
        let file = try TensorFile(path: path)
        let before = try mappedResident()
        for (k, name) in names.enumerated() {
            let values = try file.floats(name)
            XCTAssertEqual(values[999], Float(999 + k))
            XCTAssertLessThan(try mappedResident() - before, 4 << 20, "after reading \(name)")
        }
    }

    func testScratchFloatsInMemoryAndOnDisk() throws {
        let n = 3 << 20  // 12 MB
        for limit in [Int.max, 0] {
            let store = try ScratchFloats(count: n, memoryLimit: limit, name: "test")
            XCTAssertEqual(store.onDisk, limit == 0)
            let before = try mappedResident()
            for start in stride(from: 0, to: n, by: 1 << 20) {
                store.withSlice(start..<(start + (1 << 20))) { s in
                    XCTAssertEqual(s[0], 0)
                    for i in s.indices { s[i] += Float(start + i) }
                }
                if store.onDisk { XCTAssertLessThan(try mappedResident() - before, 2 << 20) }
            }
            store.withSlice(0..<n) { s in
                XCTAssertEqual(s[12345], 12345)
                XCTAssertEqual(s[n - 1], Float(n - 1))
            }
        }
    }
}
