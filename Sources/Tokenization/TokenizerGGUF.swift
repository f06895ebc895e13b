import TensorIO

extension Tokenizer {
    /// The `tokenizer.ggml.*` metadata llama.cpp reads for this tokenizer (byte-level BPE:
    /// model "gpt2", the pre-tokenizer's llama.cpp name, tokens, token types — 1 normal,
    /// 3 control for special added tokens, 4 user-defined for the other added ones — merges,
    /// BOS/EOS). SentencePiece tokenizers are refused: their GGUF form needs scores this
    /// tokenizer does not keep.
    public func ggufMetadata() throws -> [(String, GGUFValue)] {
        guard sentencePiece == nil else {
            throw TokenizerError("GGUF export of a SentencePiece tokenizer is not supported yet (it needs the piece scores)")
        }
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
}
