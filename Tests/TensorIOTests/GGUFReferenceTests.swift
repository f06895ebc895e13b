import Foundation
import TensorIO
import TestSupport
import XCTest

/// Dequantisation equals gguf-py's bit for bit (fixtures from scripts/reference/gguf_reference.py).
final class GGUFReferenceTests: XCTestCase {
    struct Expected: Decodable {
        var type: String
        var shape: [Int]
        var sha256: String
        var first: [Float]?
    }

    func load(_ name: String) throws -> [String: Expected] {
        try JSONDecoder().decode([String: Expected].self,
                                 from: Data(contentsOf: Fixtures.url("gguf/\(name)")))
    }

    func check(_ file: GGUFFile, _ expected: [String: Expected]) throws {
        XCTAssertEqual(Set(file.tensors.map(\.name)), Set(expected.keys))
        for t in file.tensors {
            guard let e = expected[t.name] else { continue }
            XCTAssertEqual(t.type.name, e.type, t.name)
            XCTAssertEqual(t.shape, e.shape, t.name)
            let values = try file.dequantize(t)
            let digest = values.withUnsafeBytes { SHA256.hexDigest($0) }
            if digest != e.sha256 {
                let first = e.first.map { " first expected \($0), got \(Array(values.prefix(8)))" } ?? ""
                XCTFail("\(t.name) (\(t.type.name)): dequantised values differ from gguf-py\(first)")
            }
        }
    }

    func testEveryBlockTypeMatchesGGUFPy() throws {
        let file = try GGUFFile(path: Fixtures.url("gguf/quant_blocks.gguf").path)
        try check(file, try load("quant_blocks_sha256.json"))
        XCTAssertEqual(file.metadata["test.string"]?.string, "héllo")
        XCTAssertEqual(file.metadata["test.ints"]?.ints, [1, -2, 3])
        XCTAssertEqual(file.metadata["test.f64"]?.double, 0.125)
        XCTAssertEqual(file.metadata["general.architecture"]?.string, "llama")
    }

    func testEverySmolLM2TensorMatchesGGUFPy() throws {
        let file = try GGUFFile(path: try Fixtures.requireModel())
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.tensors.count, 272)
        try check(file, try load("smollm2_dequant_sha256.json"))
    }

    func testVocabularyFilesOpen() throws {
        for (name, model, count) in [("gpt-2", "gpt2", 50257), ("llama-spm", "llama", 32000),
                                     ("llama-bpe", "gpt2", 128256), ("qwen2", "gpt2", 151936)] {
            let file = try GGUFFile(path: Fixtures.data("tokenizers/ggml-vocab-\(name).gguf").path)
            XCTAssertEqual(file.metadata["tokenizer.ggml.model"]?.string, model, name)
            XCTAssertEqual(file.metadata["tokenizer.ggml.tokens"]?.strings?.count, count, name)
            XCTAssertTrue(file.tensors.isEmpty, name)
        }
    }
}
