import Foundation
import TensorIO

extension Tokenizer {
    /// An equivalent Hugging Face tokenizer.json (the same vocabulary, merges and added tokens,
    /// the same pre-tokenizer or SentencePiece front end, and BOS through a template when this
    /// tokenizer adds one), so that an exported model directory loads in transformers and
    /// encodes identically. Written with PruneKit's JSON writer, whose object keys are exact
    /// code points (Foundation's dictionaries would merge canonically equivalent tokens).
    public func tokenizerJSON() throws -> Data {
        let addedIDs = Set(addedTokens.map(\.id))
        var seen = Set<Exact>()
        var vocab: [(key: String, value: JSONValue)] = []
        vocab.reserveCapacity(tokens.count)
        // An added token's content that is also a regular entry stays in the vocabulary once.
        for (i, t) in tokens.enumerated() where !addedIDs.contains(Int32(i)) && seen.insert(Exact(t)).inserted {
            vocab.append((t, .int(i)))
        }
        for (i, t) in tokens.enumerated() where addedIDs.contains(Int32(i)) && seen.insert(Exact(t)).inserted {
            vocab.append((t, .int(i)))
        }
        vocab.sort { $0.value.int! < $1.value.int! }
        let added: [JSONValue] = addedTokens.map {
            ["id": .int(Int($0.id)), "content": .string($0.content), "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": .bool($0.special)]
        }
        let byteLevel: JSONValue = [
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
        ]
        var post = byteLevel
        if addsBOS, let bos = bosTokenID {
            let name = JSONValue.string(tokens[Int(bos)])
            post = [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": name, "type_id": 0]],
                           ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [["SpecialToken": ["id": name, "type_id": 0]],
                         ["Sequence": ["id": "A", "type_id": 0]],
                         ["SpecialToken": ["id": name, "type_id": 1]],
                         ["Sequence": ["id": "B", "type_id": 1]]],
                "special_tokens": .object([(tokens[Int(bos)], ["id": name, "ids": [.int(Int(bos))], "tokens": [name]])]),
            ]
        }
        var normalizer: JSONValue = normalizesNFC ? ["type": "NFC"] : .null
        var preTokenizer = preTokenizerJSON(byteLevel)
        var decoder = byteLevel
        var model: [(key: String, value: JSONValue)] = [
            ("type", "BPE"), ("dropout", .null), ("unk_token", .null), ("continuing_subword_prefix", ""),
            ("end_of_word_suffix", ""), ("fuse_unk", false), ("byte_fallback", false),
            ("ignore_merges", .bool(ignoreMerges)), ("vocab", .object(vocab)),
            ("merges", .array(mergeList.map { [.string($0.0), .string($0.1)] })),
        ]
        if let spm = sentencePiece {
            sentencePieceJSON(spm, normalizer: &normalizer, preTokenizer: &preTokenizer, decoder: &decoder)
            for (i, m) in model.enumerated() {
                switch m.key {
                case "byte_fallback": model[i].value = .bool(spm.byteTokens != nil)
                case "fuse_unk": model[i].value = true
                case "unk_token": model[i].value = spm.unknown.map { .string(tokens[Int($0)]) } ?? .null
                default: break
                }
            }
        }
        let root: JSONValue = [
            "version": "1.0", "truncation": .null, "padding": .null, "added_tokens": .array(added),
            "normalizer": normalizer, "pre_tokenizer": preTokenizer, "post_processor": post,
            "decoder": decoder, "model": .object(model),
        ]
        return Data(root.serialized())
    }

    private func preTokenizerJSON(_ byteLevel: JSONValue) -> JSONValue {
        guard let pattern = pre.splitPattern, case .object(var noRegex) = byteLevel else { return byteLevel }
        for i in noRegex.indices where noRegex[i].key == "use_regex" { noRegex[i].value = false }
        return [
            "type": "Sequence",
            "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": .string(pattern)], "behavior": "Isolated", "invert": false],
                .object(noRegex),
            ],
        ]
    }

    /// The LLaMA form: the legacy normaliser (or a Metaspace pre-tokenizer), byte fallback, fused
    /// unknowns, and the decoder that maps "▁" back, joins byte tokens and strips the prefix.
    private func sentencePieceJSON(_ spm: SentencePieceModel, normalizer: inout JSONValue,
                                   preTokenizer: inout JSONValue, decoder: inout JSONValue) {
        let replace: JSONValue = ["type": "Replace", "pattern": ["String": " "], "content": "\u{2581}"]
        switch spm.prefix {
        case .always, .never:
            let prepend: [JSONValue] = spm.prefix == .always ? [["type": "Prepend", "prepend": "\u{2581}"]] : []
            normalizer = ["type": "Sequence", "normalizers": .array(prepend + [replace])]
            preTokenizer = .null
        case .metaspaceAlways, .metaspaceFirst:
            normalizer = .null
            preTokenizer = [
                "type": "Metaspace", "replacement": "\u{2581}", "split": false,
                "prepend_scheme": spm.prefix == .metaspaceFirst ? "first" : "always",
            ]
        }
        var steps: [JSONValue] = [
            ["type": "Replace", "pattern": ["String": "\u{2581}"], "content": " "],
            ["type": "ByteFallback"], ["type": "Fuse"],
        ]
        if spm.prefix != .never { steps.append(["type": "Strip", "content": " ", "start": 1, "stop": 0]) }
        decoder = ["type": "Sequence", "decoders": .array(steps)]
    }
}
