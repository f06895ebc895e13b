import Foundation
import Tokenization
import XCTest

/// tokenizer.json refused, one case per corruption: each gives one `TokenizerError` whose message says what is
/// wrong (the tools prefix it with the file). The base is a valid SentencePiece-style BPE of five pieces.
final class TokenizerJSONCorruptTests: XCTestCase {
    static let base = #"""
        {"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}],
         "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
         "pre_tokenizer": null, "post_processor": null, "decoder": null,
         "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": false,
                   "vocab": {"<unk>": 0, "<s>": 1, "\u2581": 2, "a": 3, "b": 4, "\u2581a": 5, "ab": 6},
                   "merges": ["\u2581 a", "a b"]}}
        """#

    /// The base with `change` applied to its parsed object.
    func variant(_ change: (inout [String: Any]) -> Void) throws -> Data {
        var root = try JSONSerialization.jsonObject(with: Data(Self.base.utf8)) as! [String: Any]
        change(&root)
        return try JSONSerialization.data(withJSONObject: root)
    }

    func model(_ change: @escaping (inout [String: Any]) -> Void) throws -> Data {
        try variant { root in
            var m = root["model"] as! [String: Any]
            change(&m)
            root["model"] = m
        }
    }

    func testBaseIsValid() throws {
        let tokenizer = try Tokenizer(json: Data(Self.base.utf8))
        XCTAssertEqual(tokenizer.encode("ab a"), [5, 4, 5])  // ▁a b ▁a: "▁ a" merges before "a b"
    }

    func testEachCorruptionIsRefusedWithItsReason() throws {
        let byteLevel: (inout [String: Any]) -> Void = { root in
            root["normalizer"] = NSNull()
            root["pre_tokenizer"] = ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true]
        }
        let cases: [(String, Data, String)] = [
            ("not JSON", Data("{\"model\": ".utf8), "tokenizer.json: invalid JSON"),
            ("not UTF-8", Data([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D]), "tokenizer.json: invalid JSON"),
            ("an array", Data("[1, 2]".utf8), "tokenizer.json is not a JSON object"),
            ("WordPiece", try model { $0["type"] = "WordPiece" }, "only BPE models are supported, got WordPiece"),
            ("no model", try variant { $0["model"] = nil }, "only BPE models are supported, got none"),
            ("no vocab", try model { $0["vocab"] = nil }, "model.vocab is missing"),
            ("negative id", try model { $0["vocab"] = ["a": -1] }, "token 'a' has id"),
            ("id too large", try model { $0["vocab"] = ["a": 10_000_000] }, "not an id in 0..<10000000"),
            ("id not a number", try model { $0["vocab"] = ["a": "3"] }, "token 'a' has id"),
            ("sparse ids", try model { $0["vocab"] = ["<unk>": 0, "a": 9_999_999] }, "ids reach 9999999 for 4 tokens"),
            ("one id twice", try model { $0["vocab"] = ["<unk>": 0, "a": 3, "b": 3] }, "id 3 is given to two tokens"),
            ("added token without id", try variant { $0["added_tokens"] = [["content": "<s>"]] }, "an added token lacks id or content"),
            ("empty vocabulary", try variant { root in
                root["added_tokens"] = []
                var m = root["model"] as! [String: Any]
                m["vocab"] = [String: Int]()
                root["model"] = m
            }, "the vocabulary is empty"),
            ("merge without space", try model { $0["merges"] = ["ab"] }, "merge 0 'ab' is not 'a b'"),
            ("merge not a string", try model { $0["merges"] = [3] }, "merge 0 is neither 'a b' nor [a, b]"),
            ("unknown unk_token", try model { $0["unk_token"] = "<zzz>" }, "unk_token '<zzz>' is not in the vocabulary"),
            ("byte fallback, byte-level", try variant { root in
                byteLevel(&root)
                var m = root["model"] as! [String: Any]
                m["byte_fallback"] = true
                root["model"] = m
            }, "byte_fallback without a SentencePiece-style normaliser"),
            ("other normaliser", try variant { root in
                byteLevel(&root)
                root["normalizer"] = ["type": "NFD"]
            }, "normalizer NFD is not supported yet"),
            ("no pre-tokenizer", try variant { $0["normalizer"] = NSNull() }, "no pre_tokenizer; only byte-level BPE"),
            ("other pre-tokenizer", try variant { root in
                root["normalizer"] = NSNull()
                root["pre_tokenizer"] = ["type": "Whitespace"]
            }, "pre-tokenizer Whitespace is not supported yet"),
            ("normaliser and pre-tokenizer", try variant { $0["pre_tokenizer"] = ["type": "Whitespace"] },
             "a SentencePiece normaliser with a pre-tokenizer is not supported"),
            ("Metaspace scheme", try variant { root in
                root["normalizer"] = NSNull()
                root["pre_tokenizer"] = ["type": "Metaspace", "replacement": "\u{2581}", "split": false,
                                         "prepend_scheme": "sometimes"]
            }, "Metaspace prepend_scheme 'sometimes' is unknown"),
            ("Metaspace split", try variant { root in
                root["normalizer"] = NSNull()
                root["pre_tokenizer"] = ["type": "Metaspace", "replacement": "\u{2581}", "split": true]
            }, "Metaspace pre-tokenizer other than '▁' without split"),
        ]
        for (name, json, message) in cases {
            XCTAssertThrowsError(try Tokenizer(json: json), name) { error in
                XCTAssertTrue(error is TokenizerError, "\(name): \(error)")
                XCTAssertTrue("\(error)".contains(message), "\(name): \(error)")
                XCTAssertFalse("\(error)".contains("\n"), name)
            }
        }
    }
}
