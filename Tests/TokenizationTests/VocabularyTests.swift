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

    func testLlamaSentencePieceFromGGUFAndFromItsTokenizerJSON() throws {
        let file = try GGUFFile(path: Fixtures.data("tokenizers/ggml-vocab-llama-spm.gguf").path)
        let tokenizer = try Tokenizer(gguf: file.metadata)
        try check(tokenizer, "llama-spm")
        try check(try Tokenizer(json: try tokenizer.tokenizerJSON()), "llama-spm")
        XCTAssertEqual(tokenizer.encode("Hello", addSpecialTokens: true), [1, 15043])
    }

    /// The GGUF form written for llama.cpp (scores from the merge order) reads back as the same
    /// tokenizer, from the GGUF and from the tokenizer.json written from it: every vector holds.
    func testLlamaSentencePieceGGUFExportReadsBack() throws {
        let file = try GGUFFile(path: Fixtures.data("tokenizers/ggml-vocab-llama-spm.gguf").path)
        for source in [try Tokenizer(gguf: file.metadata), try Tokenizer(json: try Tokenizer(gguf: file.metadata).tokenizerJSON())] {
            let meta = Dictionary(try source.ggufMetadata(), uniquingKeysWith: { a, _ in a })
            XCTAssertEqual(meta["tokenizer.ggml.model"]?.string, "llama")
            XCTAssertEqual(meta["tokenizer.ggml.unknown_token_id"]?.int, 0)
            XCTAssertEqual(meta["tokenizer.ggml.token_type"]?.ints?[0..<4], [2, 3, 3, 6])
            let back = try Tokenizer(gguf: meta)
            try check(back, "llama-spm")
            XCTAssertEqual(back.encode("Hello", addSpecialTokens: true), [1, 15043])
        }
    }

    /// Ids from Hugging Face `tokenizers` on the tokenizer.json written from this GGUF: U+03AF and
    /// U+1F77 are distinct entries that `String ==` takes as equal; added tokens split the text
    /// and each segment gets its own "▁"; a byte without a token falls back to <0xXX>. Decoded
    /// texts are Hugging Face's decodes of the same ids.
    func testLlamaSentencePieceExactCodePointsAndSegments() throws {
        let file = try GGUFFile(path: Fixtures.data("tokenizers/ggml-vocab-llama-spm.gguf").path)
        let tokenizer = try Tokenizer(gguf: file.metadata)
        let json = try Tokenizer(json: try tokenizer.tokenizerJSON())
        XCTAssertEqual(json.vocabularySize, 32000)
        let cases: [(String, [Int32])] = [
            ("\u{03AF}", [29871, 30207]),
            ("\u{1F77}", [29871, 30873]),
            ("Ελληνικά \u{03AF}διο \u{1F77}διο",
             [29871, 30311, 30142, 30142, 30183, 30133, 30136, 30173, 30216, 29871, 30207, 30201, 30136, 30123,
              29871, 30873, 30201, 30136, 30123]),
            ("a<s>b </s> c", [263, 1, 289, 29871, 2, 29871, 274]),
            ("x\u{0}y", [921, 3, 29891]),
            ("  <unk>ő", [1678, 0, 22294]),
        ]
        for (text, ids) in cases {
            XCTAssertEqual(tokenizer.encode(text), ids, text.debugDescription)
            XCTAssertEqual(json.encode(text), ids, text.debugDescription)
            // Decoding puts back the "▁" of every segment, as Hugging Face does.
            let decoded = ["a<s>b </s> c": "a<s> b </s>  c", "  <unk>ő": "  <unk> ő"][text] ?? text
            XCTAssertEqual(tokenizer.decode(ids), decoded, text.debugDescription)
        }
        XCTAssertEqual(tokenizer.decode([263, 1, 289, 29871, 2, 29871, 274], skipSpecialTokens: true), "a b   c")
    }
}
