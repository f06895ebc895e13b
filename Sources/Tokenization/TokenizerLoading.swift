import Foundation
import TensorIO

extension Tokenizer {
    /// From a Hugging Face tokenizer.json with a BPE model: byte-level (GPT-2, LLaMA-3 or Qwen2
    /// pre-tokenizer) or SentencePiece-style (LLaMA normaliser or Metaspace, byte fallback).
    public convenience init(json: Data) throws {
        let root: JSONValue
        do { root = try JSONValue.parse([UInt8](json)) } catch let e as JSONSyntaxError {
            throw TokenizerError("tokenizer.json: \(e)")
        }
        guard root.members != nil else { throw TokenizerError("tokenizer.json is not a JSON object") }
        guard let model = root["model"], model["type"]?.string == "BPE" else {
            throw TokenizerError("tokenizer.json: only BPE models are supported, got \(root["model"]?["type"]?.string ?? "none")")
        }
        guard let vocab = model["vocab"]?.members else {
            throw TokenizerError("tokenizer.json: model.vocab is missing")
        }
        let spmPrefix = try Self.sentencePiecePrefix(root)
        let byteFallback = model["byte_fallback"]?.bool ?? false
        if byteFallback && spmPrefix == nil {
            throw TokenizerError("tokenizer.json: byte_fallback without a SentencePiece-style normaliser or Metaspace pre-tokenizer is not supported")
        }
        let pre = spmPrefix != nil ? PreTokenizerKind.gpt2 : try Self.preTokenizer(root["pre_tokenizer"])
        let nfc = root["normalizer"]?["type"]?.string == "NFC"
        if spmPrefix == nil, let norm = root["normalizer"], !norm.isNull, !nfc {
            throw TokenizerError("tokenizer.json: normalizer \(norm["type"]?.string ?? "?") is not supported yet")
        }
        var added: [(String, Int32, Bool)] = []
        var size = 0
        var ids: [(String, Int)] = []
        ids.reserveCapacity(vocab.count)
        for (t, v) in vocab {
            guard let id = v.int, id >= 0, id < 10_000_000 else {
                throw TokenizerError("tokenizer.json: token '\(t)' has id \(v.kindName), not an id in 0..<10000000")
            }
            ids.append((t, id))
            size = max(size, id + 1)
        }
        for token in root["added_tokens"]?.items ?? [] {
            guard let id = token["id"]?.int, id >= 0, id < 10_000_000, let content = token["content"]?.string else {
                throw TokenizerError("tokenizer.json: an added token lacks id or content")
            }
            added.append((content, Int32(id), token["special"]?.bool ?? false))
            size = max(size, id + 1)
        }
        guard size > 0 else { throw TokenizerError("tokenizer.json: the vocabulary is empty") }
        // Ids are consecutive in every real vocabulary; a few gaps are tolerated, not an id far beyond the count
        // (one id of 9,999,999 would make every per-id table ten million entries long).
        let entries = ids.count + added.count
        guard size <= entries + Self.idGapLimit else {
            throw TokenizerError("tokenizer.json: ids reach \(size - 1) for \(entries) tokens; a vocabulary's ids are consecutive (at most \(Self.idGapLimit) unused)")
        }
        var tokens = [String](repeating: "", count: size)
        var filled = [Bool](repeating: false, count: size)
        for (t, id) in ids {
            guard !filled[id] else { throw TokenizerError("tokenizer.json: id \(id) is given to two tokens") }
            tokens[id] = t
            filled[id] = true
        }
        for (content, id, _) in added where !filled[Int(id)] {
            tokens[Int(id)] = content
            filled[Int(id)] = true
        }
        var merges: [(String, String)] = []
        for (i, m) in (model["merges"]?.items ?? []).enumerated() {
            if let text = m.string {
                let parts = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw TokenizerError("tokenizer.json: merge \(i) '\(text)' is not 'a b'") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let pair = m.items, pair.count == 2, let a = pair[0].string, let b = pair[1].string {
                merges.append((a, b))
            } else {
                throw TokenizerError("tokenizer.json: merge \(i) is neither 'a b' nor [a, b]")
            }
        }
        // BOS: the special token a TemplateProcessing post-processor puts before the sequence.
        var bos: Int32? = nil, addsBOS = false
        if let post = root["post_processor"], post["type"]?.string == "TemplateProcessing",
           let name = post["single"]?.items?.first?["SpecialToken"]?["id"]?.string,
           let id = post["special_tokens"]?[name]?["ids"]?.items?.first?.int
        {
            bos = Int32(id)
            addsBOS = true
        }
        var spm: SentencePieceModel? = nil
        if let spmPrefix {
            var unknown: Int32? = nil
            if let name = model["unk_token"]?.string {
                guard let id = tokens.firstIndex(where: { $0.utf8.elementsEqual(name.utf8) }) else {
                    throw TokenizerError("tokenizer.json: unk_token '\(name)' is not in the vocabulary")
                }
                unknown = Int32(id)
            }
            if model["fuse_unk"]?.bool == false && unknown != nil {
                throw TokenizerError("tokenizer.json: SentencePiece BPE without fuse_unk is not supported")
            }
            spm = SentencePieceModel(tokens: tokens, byteFallback: byteFallback, unknown: unknown, prefix: spmPrefix)
        }
        try self.init(tokens: tokens, merges: merges, added: added, pre: pre, bos: bos,
                      eos: nil, addsBOS: addsBOS,
                      ignoreMerges: model["ignore_merges"]?.bool ?? false, normalizesNFC: nfc,
                      sentencePiece: spm)
    }

    /// The SentencePiece-style front end, if this tokenizer.json has one: the legacy LLaMA
    /// normaliser (Sequence of Prepend "▁" and Replace " " → "▁", no pre-tokenizer), or a
    /// Metaspace pre-tokenizer ("▁", split false) with no normaliser.
    private static func sentencePiecePrefix(_ root: JSONValue) throws -> SpacePrefix? {
        let norm = root["normalizer"].flatMap { $0.isNull ? nil : $0 }
        let pre = root["pre_tokenizer"].flatMap { $0.isNull ? nil : $0 }
        func isReplaceSpace(_ n: JSONValue) -> Bool {
            n["type"]?.string == "Replace" && n["pattern"]?["String"]?.string == " " && n["content"]?.string == "\u{2581}"
        }
        if let norm, norm["type"]?.string == "Sequence", let items = norm["normalizers"]?.items {
            let prepends = items.count == 2 && items[0]["type"]?.string == "Prepend"
                && items[0]["prepend"]?.string == "\u{2581}" && isReplaceSpace(items[1])
            let replaceOnly = items.count == 1 && isReplaceSpace(items[0])
            if prepends || replaceOnly {
                guard pre == nil else {
                    throw TokenizerError("tokenizer.json: a SentencePiece normaliser with a pre-tokenizer is not supported")
                }
                return prepends ? .always : .never
            }
            return nil
        }
        if norm == nil, let pre, pre["type"]?.string == "Metaspace" {
            guard pre["replacement"]?.string == "\u{2581}", pre["split"]?.bool == false else {
                throw TokenizerError("tokenizer.json: Metaspace pre-tokenizer other than '▁' without split is not supported")
            }
            switch pre["prepend_scheme"]?.string ?? (pre["add_prefix_space"]?.bool == false ? "never" : "always") {
            case "always": return .metaspaceAlways
            case "first": return .metaspaceFirst
            case "never": return .never
            case let other: throw TokenizerError("tokenizer.json: Metaspace prepend_scheme '\(other)' is unknown")
            }
        }
        return nil
    }

    /// GPT-2's ByteLevel regex, or a Split with LLaMA-3's or Qwen2's regex before a ByteLevel
    /// without regex.
    private static func preTokenizer(_ pre: JSONValue?) throws -> PreTokenizerKind {
        guard let p = pre, let type = p["type"]?.string else {
            throw TokenizerError("tokenizer.json: no pre_tokenizer; only byte-level BPE is supported")
        }
        if type == "ByteLevel", p["use_regex"]?.bool ?? true, p["add_prefix_space"]?.bool != true {
            return .gpt2
        }
        if type == "Sequence", let items = p["pretokenizers"]?.items, items.count == 2,
           items[0]["type"]?.string == "Split",
           let pattern = items[0]["pattern"]?["Regex"]?.string,
           items[1]["type"]?.string == "ByteLevel", items[1]["use_regex"]?.bool == false
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
        if model == "llama" {
            try self.init(sentencePieceGGUF: meta)
            return
        }
        guard model == "gpt2" else {
            throw TokenizerError("GGUF tokenizer model '\(model)' is not supported yet (gpt2 byte-level BPE, llama SentencePiece BPE)")
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
        let bos = try Tokenizer.tokenID(meta, "tokenizer.ggml.bos_token_id", vocabulary: tokens.count)
        let eos = try Tokenizer.tokenID(meta, "tokenizer.ggml.eos_token_id", vocabulary: tokens.count)
        let addsBOS = meta["tokenizer.ggml.add_bos_token"]?.bool ?? false
        // As llama.cpp: LLaMA-3 ignores merges for whole-vocabulary pieces; Qwen2's Hugging Face
        // tokenizer normalises to NFC.
        try self.init(tokens: tokens, merges: merges, added: added, pre: pre, bos: bos, eos: eos,
                      addsBOS: addsBOS, ignoreMerges: pre == .llama3, normalizesNFC: pre == .qwen2)
    }

    /// The token id a GGUF key states, which must lie in the vocabulary (nil when absent).
    private static func tokenID(_ meta: [String: GGUFValue], _ key: String, vocabulary count: Int) throws -> Int32? {
        guard let v = meta[key] else { return nil }
        guard let i = v.int, i >= 0, i < count else {
            throw TokenizerError("GGUF \(key) is not a token id of the vocabulary")
        }
        return Int32(i)
    }

    /// From GGUF metadata of `tokenizer.ggml.model` "llama" (SentencePiece BPE with byte
    /// fallback): merges generated from `tokenizer.ggml.scores` as transformers does; unknown
    /// (2), control (3) and user-defined (4) tokens are added tokens; "▁" goes before the text
    /// unless `tokenizer.ggml.add_space_prefix` is false.
    private convenience init(sentencePieceGGUF meta: [String: GGUFValue]) throws {
        guard let tokens = meta["tokenizer.ggml.tokens"]?.strings, !tokens.isEmpty else {
            throw TokenizerError("GGUF has no tokenizer.ggml.tokens")
        }
        guard let scores = meta["tokenizer.ggml.scores"]?.floats, scores.count == tokens.count else {
            throw TokenizerError("GGUF tokenizer.ggml.scores is missing or not one score per token")
        }
        let types = meta["tokenizer.ggml.token_type"]?.ints ?? []
        guard types.count == tokens.count else {
            throw TokenizerError("GGUF tokenizer.ggml.token_type is missing or not one type per token")
        }
        var added: [(String, Int32, Bool)] = []
        for (i, t) in types.enumerated() where t == 2 || t == 3 || t == 4 {
            added.append((tokens[i], Int32(i), t != 4))
        }
        func id(_ key: String) throws -> Int32? { try Tokenizer.tokenID(meta, key, vocabulary: tokens.count) }
        let unknown = try id("tokenizer.ggml.unknown_token_id") ?? types.firstIndex(of: 2).map { Int32($0) }
        let prefix: SpacePrefix = (meta["tokenizer.ggml.add_space_prefix"]?.bool ?? true) ? .always : .never
        let spm = SentencePieceModel(tokens: tokens, byteFallback: true, unknown: unknown, prefix: prefix)
        try self.init(tokens: tokens, merges: SentencePieceModel.merges(tokens: tokens, scores: scores),
                      added: added, pre: .gpt2, bos: try id("tokenizer.ggml.bos_token_id"),
                      eos: try id("tokenizer.ggml.eos_token_id"),
                      addsBOS: meta["tokenizer.ggml.add_bos_token"]?.bool ?? true, sentencePiece: spm)
    }
}

extension Tokenizer {
    /// The tokenizer of a model: a GGUF file's `tokenizer.ggml.*` metadata, a Hugging Face
    /// directory's tokenizer.json, or a PruneKit model file's metadata.
    public static func load(model path: String) throws -> Tokenizer {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TensorIOError.missing("\(path): no such file or directory")
        }
        if isDirectory.boolValue {
            let bytes = try readDataFile(path + "/tokenizer.json")
            return try naming("\(path): the tokenizer") { try Tokenizer(json: Data(bytes)) }
        }
        if try isGGUFFile(path: path) {
            let metadata = try GGUFFile(path: path).metadata
            return try naming("\(path): the tokenizer") { try Tokenizer(gguf: metadata) }
        }
        let file = try TensorFile(path: path)
        guard let json = file.metadata["tokenizer"] else {
            throw TokenizerError("\(path): the model file carries no tokenizer")
        }
        return try naming("\(path): the tokenizer") { try Tokenizer(json: Data(json.utf8)) }
    }

    /// The most ids below a tokenizer.json's largest that no token may use.
    static let idGapLimit = 65_536

    /// A Hugging Face tokenizer.json file ("-" is standard input).
    public static func load(json path: String) throws -> Tokenizer {
        let bytes = try readDataFile(path)
        return try naming(shownName(path)) { try Tokenizer(json: Data(bytes)) }
    }

    /// Prefixes the errors of building a tokenizer with where it comes from: its checks see only
    /// the JSON or the GGUF metadata.
    private static func naming(_ source: String, _ build: () throws -> Tokenizer) throws -> Tokenizer {
        do { return try build() } catch let e as TokenizerError {
            throw TokenizerError("\(source): \(e.message)")
        }
    }
}
