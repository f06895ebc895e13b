import Foundation
import TensorIO
import TestSupport
import Tokenization
import XCTest

/// The SmolLM2 tokenizer (from the model GGUF) against transformers' tokenizer for the same GGUF
/// on the whole evaluation texts (scripts/reference/model_reference.py datasets).
final class SmolLM2TokenizerTests: XCTestCase {
    struct Row: Decodable { var tokens: Int; var sha256: String; var first: [Int32] }

    func texts() throws -> [String: String] {
        let raw = try String(contentsOf: Fixtures.data("wikitext-2-raw/wiki.test.raw"), encoding: .utf8)
        var rows: [String] = []
        var current = ""
        for ch in raw.unicodeScalars {
            current.unicodeScalars.append(ch)
            if ch == "\n" {
                rows.append(current.allSatisfy(\.isWhitespace) ? "" : current)
                current = ""
            }
        }
        let ptb = try String(contentsOf: Fixtures.data("ptb/ptb.test.txt"), encoding: .utf8)
        var lines = ptb.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        var c4: [String] = []
        let c4bytes = try readDataFile(Fixtures.data("c4/c4-validation-sample-2k.jsonl.zst").path)
        for line in c4bytes.split(separator: UInt8(ascii: "\n")) {
            if let t = try line.withUnsafeBytes({ try JSONLine.stringField($0, "text") }) { c4.append(t) }
        }
        XCTAssertEqual(c4.count, 2000)
        return ["wikitext2": rows.joined(separator: "\n\n"),
                "ptb": lines.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " "),
                "c4": c4.joined(separator: "\n\n")]
    }

    func testEvaluationStreamsEqualTransformers() throws {
        let expected = try JSONDecoder().decode(
            [String: Row].self, from: Data(contentsOf: Fixtures.url("model/datasets.json")))
        let file = try GGUFFile(path: try Fixtures.requireModel())
        let tokenizer = try Tokenizer(gguf: file.metadata)
        XCTAssertFalse(tokenizer.addsBOS)
        for (name, text) in try texts() {
            guard let row = expected[name] else { XCTFail("no reference for \(name)"); continue }
            let ids = tokenizer.encode(text, addSpecialTokens: true)
            XCTAssertEqual(Array(ids.prefix(16)), row.first, name)
            XCTAssertEqual(ids.count, row.tokens, name)
            XCTAssertEqual(ids.withUnsafeBytes { SHA256.hexDigest($0) }, row.sha256, "\(name) ids differ")
            XCTAssertEqual(tokenizer.decode(ids), text, "\(name): decode(encode(x)) != x")
        }
    }

    func testSpecialTokensAreMatchedInText() throws {
        let file = try GGUFFile(path: try Fixtures.requireModel())
        let tokenizer = try Tokenizer(gguf: file.metadata)
        let ids = tokenizer.encode("<|im_start|>user\nHi<|im_end|>")
        XCTAssertEqual(ids.first, 1)
        XCTAssertEqual(ids.last, 2)
        XCTAssertEqual(tokenizer.decode(ids, skipSpecialTokens: true), "user\nHi")
    }
}
