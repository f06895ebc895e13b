import TensorIO

extension Tokenizer {
    /// The `tokenizer.ggml.*` metadata llama.cpp reads for this tokenizer. Byte-level BPE: model
    /// "gpt2", the pre-tokenizer's llama.cpp name, tokens, token types — 1 normal, 3 control for
    /// special added tokens, 4 user-defined for the other added ones — merges, BOS/EOS.
    /// SentencePiece BPE: model "llama", tokens, scores, types (also 2 unknown, 6 byte), BOS/EOS/
    /// unknown ids, `add_space_prefix`; see `sentencePieceGGUFMetadata`.
    public func ggufMetadata() throws -> [(String, GGUFValue)] {
        if let spm = sentencePiece { return try sentencePieceGGUFMetadata(spm) }
        let preName: String
        switch pre {
        case .gpt2: preName = "gpt-2"
        case .llama3: preName = "llama-bpe"
        case .qwen2: preName = "qwen2"
        }
        var types = [Int32](repeating: 1, count: tokens.count)
        for a in addedTokens where Int(a.id) < tokens.count { types[Int(a.id)] = a.special ? 3 : 4 }
        var out: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("gpt2")),
            ("tokenizer.ggml.pre", .string(preName)),
            ("tokenizer.ggml.tokens", .array(tokens.map { .string($0) })),
            ("tokenizer.ggml.token_type", .array(types.map { .int32($0) })),
            ("tokenizer.ggml.merges", .array(mergeList.map { .string("\($0.0) \($0.1)") })),
            ("tokenizer.ggml.add_bos_token", .bool(addsBOS)),
        ]
        if let b = bosTokenID { out.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(b)))) }
        if let e = eosTokenID { out.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(e)))) }
        return out
    }

    /// llama.cpp merges SentencePiece symbols by the score of the merged piece (highest first,
    /// leftmost among equals); the tokenizer keeps merges, not scores, so each piece gets the
    /// score −(1 + rank of the first merge that makes it): the merges' order as scores (the
    /// inverse of transformers' merges-from-scores, which this tokenizer's GGUF import uses).
    /// Pieces no merge makes (single characters, bytes, control tokens) score 0, as in LLaMA's
    /// own GGUF. llama.cpp puts "▁" before the text and after every special token, the legacy
    /// LLaMA normaliser's behaviour; Metaspace's other schemes are refused.
    private func sentencePieceGGUFMetadata(_ spm: SentencePieceModel) throws -> [(String, GGUFValue)] {
        guard spm.prefix == .always || spm.prefix == .never else {
            throw TokenizerError("GGUF export of a SentencePiece tokenizer whose Metaspace prepends \"▁\" only to the first segment or only without one: llama.cpp has no such scheme")
        }
        var scores = [Float](repeating: 0, count: tokens.count)
        var scored = [Bool](repeating: false, count: tokens.count)
        for (rank, (a, b)) in mergeList.enumerated() {
            guard let id = vocab[Exact(a + b)], !scored[Int(id)] else { continue }
            scored[Int(id)] = true
            scores[Int(id)] = -Float(rank + 1)
        }
        var types = [Int32](repeating: 1, count: tokens.count)
        if let bytes = spm.byteTokens { for id in bytes where id >= 0 { types[Int(id)] = 6 } }
        for a in addedTokens where Int(a.id) < tokens.count { types[Int(a.id)] = a.special ? 3 : 4 }
        if let u = spm.unknown { types[Int(u)] = 2 }
        var out: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.tokens", .array(tokens.map { .string($0) })),
            ("tokenizer.ggml.scores", .array(scores.map { .float32($0) })),
            ("tokenizer.ggml.token_type", .array(types.map { .int32($0) })),
            ("tokenizer.ggml.add_bos_token", .bool(addsBOS)),
            ("tokenizer.ggml.add_eos_token", .bool(false)),
            ("tokenizer.ggml.add_space_prefix", .bool(spm.prefix == .always)),
        ]
        if let b = bosTokenID { out.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(b)))) }
        if let e = eosTokenID { out.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(e)))) }
        if let u = spm.unknown { out.append(("tokenizer.ggml.unknown_token_id", .uint32(UInt32(u)))) }
        return out
    }
}
