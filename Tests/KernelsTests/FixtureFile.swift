// A minimal reader for the uncompressed safetensors fixtures that
// scripts/reference/kernels_reference.py writes (F32, F64, I32, I64), so that these tests do not
// depend on TensorIO. Fixtures are trusted files of this repository; errors fail the test.
import Foundation
import TestSupport
import XCTest

struct FixtureFile {
    private struct Entry: Decodable {
        let dtype: String
        let shape: [Int]
        let data_offsets: [Int]
    }
    private let entries: [String: Entry]
    private let data: Data
    private let base: Int

    init(_ name: String, folder: String = "kernels") throws {
        data = try Data(contentsOf: Fixtures.url("\(folder)/\(name).safetensors"))
        let n = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        var header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n)))
            as! [String: Any]
        header.removeValue(forKey: "__metadata__")
        let json = try JSONSerialization.data(withJSONObject: header)
        entries = try JSONDecoder().decode([String: Entry].self, from: json)
        base = 8 + n
    }

    func shape(_ name: String) throws -> [Int] {
        guard let e = entries[name] else { throw FixtureError.missing("no tensor \(name)") }
        return e.shape
    }

    private func raw<T>(_ name: String, _ type: T.Type) throws -> (String, [T]) {
        guard let e = entries[name] else { throw FixtureError.missing("no tensor \(name)") }
        let bytes = data.subdata(in: (base + e.data_offsets[0])..<(base + e.data_offsets[1]))
        let values = bytes.withUnsafeBytes { Array($0.bindMemory(to: T.self)) }
        return (e.dtype, values)
    }

    func doubles(_ name: String) throws -> [Double] {
        guard let e = entries[name] else { throw FixtureError.missing("no tensor \(name)") }
        switch e.dtype {
        case "F64": return try raw(name, Double.self).1
        case "F32": return try raw(name, Float.self).1.map(Double.init)
        default: throw FixtureError.missing("\(name) is \(e.dtype), not a float")
        }
    }

    func floats(_ name: String) throws -> [Float] {
        guard let e = entries[name], e.dtype == "F32" else {
            throw FixtureError.missing("\(name) is not F32")
        }
        return try raw(name, Float.self).1
    }

    func ints(_ name: String) throws -> [Int] {
        guard let e = entries[name] else { throw FixtureError.missing("no tensor \(name)") }
        switch e.dtype {
        case "I32": return try raw(name, Int32.self).1.map(Int.init)
        case "I64": return try raw(name, Int64.self).1.map(Int.init)
        default: throw FixtureError.missing("\(name) is \(e.dtype), not an integer")
        }
    }
}

/// Uniform random floats in [−scale, scale) from a seeded generator, reproducible across runs.
struct SeededRandom {
    private var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] {
        (0..<n).map { _ in (Float(next() >> 40) / Float(1 << 24) * 2 - 1) * scale }
    }
}

extension Array where Element == Float {
    var doubles: [Double] { map(Double.init) }
}
