import Foundation
import TensorIO

extension Tokenizer {
    /// From a Hugging Face tokenizer.json with a BPE model and a byte-level pre-tokenizer.
    public convenience init(json: Data) throws {
        guard let root = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw TokenizerError("tokenizer.json is not a JSON object")
        }
        guard let model = root["model"] as? [String: Any], (model["type"] as? String) == "BPE" else {
            throw TokenizerError("tokenizer.json: only BPE models are supported, got \((root["model"] as? [String: Any])?["type"] ?? "none")")
        }
        guard let vocab = model["vocab"] as? [String: Int] else {
            throw TokenizerError("tokenizer.json: model.vocab is missing")
        }
        if (model["byte_fallback"] as? Bool) == true {
            throw TokenizerError("tokenizer.json: SentencePiece-style BPE (byte_fallback) is not supported yet")
        }
        let pre = try Self.preTokenizer(root["pre_tokenizer"])
        let nfc = ((root["normalizer"] as? [String: Any])?["type"] as? String) == "NFC"
        if let norm = root["normalizer"] as? [String: Any], !nfc {
            throw TokenizerError("tokenizer.json: normalizer \(norm["type"] ?? "?") is not supported yet")
        }
        var added: [(String, Int32, Bool)] = []
        var size = (vocab.values.max() ?? -1) + 1
        for token in root["added_tokens"] as? [[String: Any]] ?? [] {
            guard let id = token["id"] as? Int, let content = token["content"] as? String else {
                throw TokenizerError("tokenizer.json: an added token lacks id or content")
            }
            added.append((content, Int32(id), token["special"] as? Bool ?? false))
            size = max(size, id + 1)
        }
        guard size > 0, size <= 10_000_000 else {
            throw TokenizerError("tokenizer.json: vocabulary size \(size) is out of range")
        }
        var tokens = [String](repeating: "", count: size)
        var filled = [Bool](repeating: false, count: size)
        for (t, id) in vocab {
            guard id >= 0 else { throw TokenizerError("tokenizer.json: token '\(t)' has negative id \(id)") }
            tokens[id] = t
            filled[id] = true
        }
        for (content, id, _) in added where !filled[Int(id)] {
            tokens[Int(id)] = content
            filled[Int(id)] = true
        }
        var merges: [(String, String)] = []
        for (i, m) in (model["merges"] as? [Any] ?? []).enumerated() {
            if let text = m as? String {
                let parts = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw TokenizerError("tokenizer.json: merge \(i) '\(text)' is not 'a b'") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let pair = m as? [String], pair.count == 2 {
                merges.append((pair[0], pair[1]))
            } else {
                throw TokenizerError("tokenizer.json: merge \(i) is neither 'a b' nor [a, b]")
            }
        }
        // BOS: the special token a TemplateProcessing post-processor puts before the sequence.
        var bos: Int32? = nil, addsBOS = false
        if let post = root["post_processor"] as? [String: Any], (post["type"] as? String) == "TemplateProcessing",
           let single = post["single"] as? [[String: Any]], let first = single.first,
           let special = first["SpecialToken"] as? [String: Any], let name = special["id"] as? String,
           let map = post["special_tokens"] as? [String: Any], let entry = map[name] as? [String: Any],
           let ids = entry["ids"] as? [Int], let id = ids.first
        {
            bos = Int32(id)
            addsBOS = true
        }
        try self.init(tokens: tokens, merges: merges, added: added, pre: pre, bos: bos,
                      eos: nil, addsBOS: addsBOS,
                      ignoreMerges: (model["ignore_merges"] as? Bool) ?? false, normalizesNFC: nfc)
    }

    /// GPT-2's ByteLevel regex, or a Split with LLaMA-3's or Qwen2's regex before a ByteLevel
    /// without regex.
    private static func preTokenizer(_ pre: Any?) throws -> PreTokenizerKind {
        guard let p = pre as? [String: Any], let type = p["type"] as? String else {
            throw TokenizerError("tokenizer.json: no pre_tokenizer; only byte-level BPE is supported")
        }
        if type == "ByteLevel", (p["use_regex"] as? Bool) ?? true,
           (p["add_prefix_space"] as? Bool) != true {
            return .gpt2
        }
        if type == "Sequence", let items = p["pretokenizers"] as? [[String: Any]], items.count == 2,
           (items[0]["type"] as? String) == "Split",
           let pattern = (items[0]["pattern"] as? [String: Any])?["Regex"] as? String,
           (items[1]["type"] as? String) == "ByteLevel", (items[1]["use_regex"] as? Bool) == false
        {
            for kind in [PreTokenizerKind.llama3, .qwen2] where kind.splitPattern == pattern {
                return kind
            }
        }
        throw TokenizerError(
            "tokenizer.json: pre-tokenizer \(type) is not supported yet (GPT-2, LLaMA-3, Qwen2 byte-level)")
    }

    /// From GGUF metadata: `tokenizer.ggml.model` "gpt2" with a GPT-2-pattern pre-tokenizer
    /// (`tokenizer.ggml.pre` "gpt-2", "smollm" or "default").
    public convenience init(gguf meta: [String: GGUFValue]) throws {
        let model = meta["tokenizer.ggml.model"]?.string ?? "(none)"
        guard model == "gpt2" else {
            throw TokenizerError("GGUF tokenizer model '\(model)' is not supported yet (only gpt2 byte-level BPE)")
        }
        let preName = meta["tokenizer.ggml.pre"]?.string ?? "default"
        let pre: PreTokenizerKind
        switch preName {
        case "gpt-2", "smollm", "default": pre = .gpt2
        case "llama-bpe", "llama3": pre = .llama3
        case "qwen2": pre = .qwen2
        default:
            throw TokenizerError(
                "GGUF pre-tokenizer '\(preName)' is not supported yet (gpt-2, smollm, llama-bpe, qwen2)")
        }
        guard let tokens = meta["tokenizer.ggml.tokens"]?.strings, !tokens.isEmpty else {
            throw TokenizerError("GGUF has no tokenizer.ggml.tokens")
        }
        guard let mergeTexts = meta["tokenizer.ggml.merges"]?.strings else {
            throw TokenizerError("GGUF has no tokenizer.ggml.merges")
        }
        var merges: [(String, String)] = []
        merges.reserveCapacity(mergeTexts.count)
        for (i, m) in mergeTexts.enumerated() {
            let parts = m.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw TokenizerError("GGUF merge \(i) '\(m)' is not 'a b'") }
            merges.append((String(parts[0]), String(parts[1])))
        }
        // Control (3) and user-defined (4) tokens are matched in the text as added tokens.
        let types = meta["tokenizer.ggml.token_type"]?.ints ?? []
        var added: [(String, Int32, Bool)] = []
        for (i, t) in types.enumerated() where i < tokens.count && (t == 3 || t == 4) {
            added.append((tokens[i], Int32(i), t == 3))
        }
        let bos = meta["tokenizer.ggml.bos_token_id"]?.int.map { Int32($0) }
        let eos = meta["tokenizer.ggml.eos_token_id"]?.int.map { Int32($0) }
        let addsBOS = meta["tokenizer.ggml.add_bos_token"]?.bool ?? false
        // As llama.cpp: LLaMA-3 ignores merges for whole-vocabulary pieces; Qwen2's Hugging Face
        // tokenizer normalises to NFC.
        try self.init(tokens: tokens, merges: merges, added: added, pre: pre, bos: bos, eos: eos,
                      addsBOS: addsBOS, ignoreMerges: pre == .llama3, normalizesNFC: pre == .qwen2)
    }
}
