import Foundation
import TensorIO

public struct TokenizerError: DiagnosedError {
    public var message: String
    public var kind: FailureKind { .badData }
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A BPE tokenizer, byte-level (GPT-2, SmolLM2, LLaMA-3, Qwen2) or SentencePiece-style with
/// byte fallback (LLaMA-1/2, Mistral), built from a Hugging Face tokenizer.json or from GGUF
/// metadata (`tokenizer.ggml.*`), with its added/special tokens. Encoding equals Hugging Face
/// `tokenizers`; other families are refused with a clear message.
public final class Tokenizer: @unchecked Sendable {
    /// id → token string (byte-level characters).
    let tokens: [String]
    let vocab: [Exact: Int32]
    let merges: MergeTable
    /// The merges in rank order, as read (for writing tokenizer.json).
    let mergeList: [(String, String)]
    /// The symbol id of each byte (−1 when the vocabulary has none).
    let byteSymbols: [Int32]
    let pre: PreTokenizerKind
    /// Added tokens matched in the input before pre-tokenisation: content bytes and id, by first byte.
    let addedByFirstByte: [UInt8: [(bytes: [UInt8], id: Int32)]]
    let addedTokens: [(content: String, id: Int32, special: Bool)]
    public let bosTokenID: Int32?
    public let eosTokenID: Int32?
    public let addsBOS: Bool
    private var cache: [[UInt8]: [Int32]] = [:]
    private let lock = NSLock()

    public var vocabularySize: Int { tokens.count }

    /// LLaMA-3: a piece that is a whole vocabulary entry is taken as it is, unmerged.
    let ignoreMerges: Bool
    /// Qwen2's tokenizer.json normalises the text to NFC first.
    let normalizesNFC: Bool
    /// Set for a SentencePiece-style tokenizer (then `pre` and `byteSymbols` are unused).
    let sentencePiece: SentencePieceModel?

    init(tokens: [String], merges: [(String, String)], added: [(String, Int32, Bool)],
         pre: PreTokenizerKind, bos: Int32?, eos: Int32?, addsBOS: Bool,
         ignoreMerges: Bool = false, normalizesNFC: Bool = false,
         sentencePiece: SentencePieceModel? = nil) throws {
        self.sentencePiece = sentencePiece
        self.ignoreMerges = ignoreMerges
        self.normalizesNFC = normalizesNFC
        self.tokens = tokens
        var vocab: [Exact: Int32] = [:]
        vocab.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where vocab[Exact(t)] == nil { vocab[Exact(t)] = Int32(i) }
        self.vocab = vocab
        var table = MergeTable()
        for (rank, (a, b)) in merges.enumerated() {
            guard let ia = vocab[Exact(a)], let ib = vocab[Exact(b)], let im = vocab[Exact(a + b)] else {
                throw TokenizerError("merge \(rank) '\(a) \(b)' names a token missing from the vocabulary")
            }
            table.add(ia, ib, merged: im, rank: Int32(rank))
        }
        self.merges = table
        self.mergeList = merges
        var bytes: [Int32] = []
        // A byte without a token (SmolLM2 lacks a few control bytes) is dropped from the input,
        // as Hugging Face's BPE drops characters it cannot map when there is no unk token.
        for b in 0..<256 { bytes.append(vocab[Exact(String(Character(byteToUnicode[b])))] ?? -1) }
        guard sentencePiece != nil || bytes.filter({ $0 >= 0 }).count >= 128 else {
            throw TokenizerError("the vocabulary lacks most byte-level tokens; not a byte-level BPE vocabulary")
        }
        byteSymbols = bytes
        self.pre = pre
        var byFirst: [UInt8: [(bytes: [UInt8], id: Int32)]] = [:]
        for (content, id, _) in added where !content.isEmpty {
            let b = Array(content.utf8)
            byFirst[b[0], default: []].append((b, id))
        }
        for k in byFirst.keys { byFirst[k]!.sort { $0.bytes.count > $1.bytes.count } }
        addedByFirstByte = byFirst
        addedTokens = added.map { (content: $0.0, id: $0.1, special: $0.2) }
        bosTokenID = bos
        eosTokenID = eos
        self.addsBOS = addsBOS && bos != nil
        for (name, id) in [("BOS", bos), ("EOS", eos)] {
            if let id, id < 0 || Int(id) >= tokens.count {
                throw TokenizerError("\(name) token id \(id) is outside the vocabulary (\(tokens.count))")
            }
        }
    }

    /// Token ids of `text`. With `addSpecialTokens`, BOS is prepended when the tokenizer adds
    /// one (as `tokenizer(text)` does in transformers).
    public func encode(_ text: String, addSpecialTokens: Bool = false) -> [Int32] {
        var out: [Int32] = []
        if addSpecialTokens && addsBOS, let bos = bosTokenID { out.append(bos) }
        var utf8 = Array(text.utf8)
        utf8.withUnsafeMutableBufferPointer { bytes in
            var segmentStart = 0, i = 0
            while i < bytes.count {
                if let candidates = addedByFirstByte[bytes[i]],
                   let match = candidates.first(where: { c in
                       i + c.bytes.count <= bytes.count
                           && c.bytes.indices.allSatisfy { bytes[i + $0] == c.bytes[$0] }
                   })
                {
                    encodeText(UnsafeBufferPointer(rebasing: bytes[segmentStart..<i]), atStart: segmentStart == 0,
                               into: &out)
                    out.append(match.id)
                    i += match.bytes.count
                    segmentStart = i
                } else {
                    i += 1
                }
            }
            encodeText(UnsafeBufferPointer(rebasing: bytes[segmentStart..<bytes.count]), atStart: segmentStart == 0,
                       into: &out)
        }
        return out
    }

    /// Pre-tokenises and BPE-encodes text that holds no added token.
    private func encodeText(_ bytes: UnsafeBufferPointer<UInt8>, atStart: Bool, into out: inout [Int32]) {
        guard !bytes.isEmpty else { return }
        var text = String(decoding: bytes, as: UTF8.self)
        if let spm = sentencePiece {
            let symbols = spm.symbols(of: text[...].unicodeScalars, atStart: atStart)
            out.append(contentsOf: bpeMergeHeap(symbols, merges: merges))
            return
        }
        if normalizesNFC { text = text.precomposedStringWithCanonicalMapping }
        let scalars = Array(text.unicodeScalars)
        var piece: [UInt8] = []
        for range in pre.split(scalars) {
            piece.removeAll(keepingCapacity: true)
            for s in scalars[range] { piece.append(contentsOf: UTF8.encode(s)!) }
            lock.lock()
            let cached = cache[piece]
            lock.unlock()
            if let cached {
                out.append(contentsOf: cached)
                continue
            }
            if ignoreMerges {
                var word = String.UnicodeScalarView()
                for b in piece { word.append(byteToUnicode[Int(b)]) }
                if let id = vocab[Exact(String(word))] {
                    out.append(id)
                    continue
                }
            }
            var symbols = piece.compactMap { b -> Int32? in
                let id = byteSymbols[Int(b)]
                return id >= 0 ? id : nil
            }
            bpeMerge(&symbols, merges: merges)
            lock.lock()
            if cache.count > 200_000 { cache.removeAll(keepingCapacity: true) }
            cache[piece] = symbols
            lock.unlock()
            out.append(contentsOf: symbols)
        }
    }

    /// The text of `ids`: byte-level characters mapped back to bytes, added tokens as written.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
        let added = Dictionary(addedTokens.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var bytes: [UInt8] = []
        for id in ids {
            guard id >= 0 && Int(id) < tokens.count else { continue }
            if let a = added[id] {
                if !(skipSpecialTokens && a.special) { bytes.append(contentsOf: a.content.utf8) }
                continue
            }
            if let spm = sentencePiece {
                if let bt = spm.byteTokens, let b = spm.byteValue(of: tokens[Int(id)]), bt[Int(b)] == id {
                    bytes.append(b)
                    continue
                }
                for s in tokens[Int(id)].unicodeScalars {
                    bytes.append(contentsOf: UTF8.encode(s == SentencePieceModel.space ? " " : s)!)
                }
                continue
            }
            for s in tokens[Int(id)].unicodeScalars {
                if let b = unicodeToByte[s.value] {
                    bytes.append(b)
                } else {
                    bytes.append(contentsOf: UTF8.encode(s)!)
                }
            }
        }
        // The SentencePiece decoder strips the one space the prefix put before the text.
        if let spm = sentencePiece, spm.prefix != .never, bytes.first == 0x20 { bytes.removeFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }
}

