import Foundation
import TensorIO
import TestSupport
import Tokenization
import XCTest

/// llama.cpp's tokenizer test vectors (shared/data/tokenizers/*.gguf.inp / .out, ids from the
/// Hugging Face `tokenizers` reference, encoded without special tokens).
final class VocabularyTests: XCTestCase {
    func cases(_ name: String) throws -> [(String, [Int32])] {
        let inp = try String(contentsOf: Fixtures.data("tokenizers/ggml-vocab-\(name).gguf.inp"), encoding: .utf8)
        let out = try String(contentsOf: Fixtures.data("tokenizers/ggml-vocab-\(name).gguf.out"), encoding: .utf8)
        var texts = inp.components(separatedBy: "\n__ggml_vocab_test__\n")
        if texts.last == "" { texts.removeLast() }
        var lines = out.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        XCTAssertEqual(texts.count, lines.count, name)
        return zip(texts, lines).map { text, line in
            (text, line.split(separator: " ").compactMap { Int32($0) })
        }
    }

    func check(_ tokenizer: Tokenizer, _ name: String) throws {
        let all = try cases(name)
        XCTAssertGreaterThan(all.count, 30)
        for (text, expected) in all {
            XCTAssertEqual(tokenizer.encode(text), expected, "\(name): \(text.debugDescription)")
            XCTAssertEqual(tokenizer.decode(tokenizer.encode(text)), text, "\(name) decode")
        }
    }

    func testGPT2FromGGUFAndFromItsTokenizerJSON() throws {
        let file = try GGUFFile(path: Fixtures.data("tokenizers/ggml-vocab-gpt-2.gguf").path)
        let tokenizer = try Tokenizer(gguf: file.metadata)
        try check(tokenizer, "gpt-2")
        try check(try Tokenizer(json: try tokenizer.tokenizerJSON()), "gpt-2")
    }

    func testLlama3FromGGUFAndFromItsTokenizerJSON() throws {
        let file = try GGUFFile(path: Fixtures.data("tokenizers/ggml-vocab-llama-bpe.gguf").path)
        let tokenizer = try Tokenizer(gguf: file.metadata)
        try check(tokenizer, "llama-bpe")
        try check(try Tokenizer(json: try tokenizer.tokenizerJSON()), "llama-bpe")
    }

    func testQwen2FromGGUFAndFromItsTokenizerJSON() throws {
        let file = try GGUFFile(path: Fixtures.data("tokenizers/ggml-vocab-qwen2.gguf").path)
        let tokenizer = try Tokenizer(gguf: file.metadata)
        try check(tokenizer, "qwen2")
        try check(try Tokenizer(json: try tokenizer.tokenizerJSON()), "qwen2")
    }

    func testUnsupportedFamiliesAreRefusedByName() throws {
        for (name, fragment) in [("llama-spm", "GGUF tokenizer model 'llama' is not supported yet")] {
            let file = try GGUFFile(path: Fixtures.data("tokenizers/ggml-vocab-\(name).gguf").path)
            XCTAssertThrowsError(try Tokenizer(gguf: file.metadata)) {
                XCTAssertTrue("\($0)".contains(fragment), "\($0)")
            }
        }
    }
}
