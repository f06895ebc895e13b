import Foundation

extension Tokenizer {
    /// An equivalent Hugging Face tokenizer.json (byte-level BPE with GPT-2's pattern, the same
    /// vocabulary, merges and added tokens, and BOS through a template when this tokenizer adds
    /// one), so that an exported model directory loads in transformers and encodes identically.
    public func tokenizerJSON() throws -> Data {
        let addedIDs = Set(addedTokens.map(\.id))
        var vocab: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where !addedIDs.contains(Int32(i)) || vocab[t] == nil {
            vocab[t] = i
        }
        let added: [[String: Any]] = addedTokens.map {
            ["id": Int($0.id), "content": $0.content, "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": $0.special]
        }
        let byteLevel: [String: Any] = [
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
        ]
        var post: Any = byteLevel
        if addsBOS, let bos = bosTokenID {
            let name = tokens[Int(bos)]
            post = [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": name, "type_id": 0]],
                           ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [["SpecialToken": ["id": name, "type_id": 0]],
                         ["Sequence": ["id": "A", "type_id": 0]],
                         ["SpecialToken": ["id": name, "type_id": 1]],
                         ["Sequence": ["id": "B", "type_id": 1]]],
                "special_tokens": [name: ["id": name, "ids": [Int(bos)], "tokens": [name]]],
            ] as [String: Any]
        }
        let root: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(),
            "added_tokens": added,
            "normalizer": normalizesNFC ? ["type": "NFC"] as Any : NSNull(),
            "pre_tokenizer": preTokenizerJSON(byteLevel),
            "post_processor": post, "decoder": byteLevel,
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(),
                "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": ignoreMerges, "vocab": vocab,
                "merges": mergeList.map { [$0.0, $0.1] },
            ] as [String: Any],
        ]
        return try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
    }

    private func preTokenizerJSON(_ byteLevel: [String: Any]) -> Any {
        guard let pattern = pre.splitPattern else { return byteLevel }
        var noRegex = byteLevel
        noRegex["use_regex"] = false
        return [
            "type": "Sequence",
            "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated",
                 "invert": false] as [String: Any],
                noRegex,
            ],
        ] as [String: Any]
    }
}
