import Foundation
import Evaluation
import TensorIO
import Tokenization

/// Where calibration windows come from.
public enum CalibrationSource: Sendable {
    /// JSONL documents with a `text` field (C4 style; `.zst` read directly).
    case jsonl(String)
    /// One text stream.
    case text(String)
    /// Exact windows: a tensor file with an integer tensor `tokens` [N, T].
    case tokens(String)

    public var path: String {
        switch self {
        case .jsonl(let p), .text(let p), .tokens(let p): return p
        }
    }
}

/// The windows a calibration run uses, with what is needed to reproduce them.
public struct CalibrationWindows: Sendable {
    /// N·T token ids, window after window.
    public var ids: [Int32]
    public var count: Int
    public var length: Int
    /// "documents", "joined" or "tokens" (see `draw`).
    public var mode: String
    /// sha256 of the data as read (decompressed bytes).
    public var dataSHA256: String
    /// A note for the user (e.g. why the joined procedure was used).
    public var note: String?

    public func window(_ i: Int) -> ArraySlice<Int32> { ids[i * length..<(i + 1) * length] }

    /// sha256 of all windows' ids as int32 little-endian bytes.
    public var sha256: String { TokenStream(ids: ids).sha256 }

    public init(ids: [Int32], count: Int, length: Int, mode: String, dataSHA256: String, note: String? = nil) {
        self.ids = ids
        self.count = count
        self.length = length
        self.mode = mode
        self.dataSHA256 = dataSHA256
        self.note = note
    }

    /// Draws `samples` windows of `length` tokens, reproducibly from `seed`, as the GPTQ/Wanda
    /// loaders do with Python's `random.seed(seed)`:
    /// - documents (`.jsonl`): every document tokenised as `tokenizer(text)` (special tokens
    ///   as the tokenizer adds them); for each window, `randint(0, docs − 1)` until a document of
    ///   more than T tokens comes up, then `randint(0, len − T − 1)` for the start of the slice
    ///   (`get_c4`). When fewer documents than `samples` are longer than T, the documents are
    ///   joined by "\n\n" and drawn from as one stream instead (and `note` says so).
    /// - joined (`.text`, or the fallback above): the whole text tokenised, and for each window
    ///   a start `randint(0, len − T − 1)` (`get_wikitext2`).
    /// - tokens (`.tokens`): the file's windows, nothing drawn.
    public static func draw(_ source: CalibrationSource, tokenizer: Tokenizer?, samples: Int, length T: Int,
                            seed: UInt64, vocabularySize: Int) throws -> CalibrationWindows {
        let name = shownName(source.path)
        switch source {
        case .tokens(let path):
            return try fromTokensFile(path, vocabularySize: vocabularySize)
        case .jsonl(let path):
            let bytes = try readDataFile(path)
            let dataSHA = bytes.withUnsafeBytes { SHA256.hexDigest($0) }
            let texts = try jsonlTexts(contents: bytes, name: name)  // read once: "-" is a pipe
            guard let tokenizer else { throw CalibrationError("the model has no tokenizer to encode \(name)") }
            guard !texts.isEmpty else { throw CalibrationError("\(name): no documents") }
            let docs = texts.map { tokenizer.encode($0, addSpecialTokens: true) }
            let eligible = docs.filter { $0.count > T }.count
            if eligible >= samples {
                var rng = PythonRandom(seed: seed)
                var ids: [Int32] = []
                ids.reserveCapacity(samples * T)
                for _ in 0..<samples {
                    var doc: [Int32]
                    repeat { doc = docs[rng.randint(0, docs.count - 1)] } while doc.count <= T
                    let start = rng.randint(0, doc.count - T - 1)
                    ids += doc[start..<start + T]
                }
                return CalibrationWindows(ids: ids, count: samples, length: T, mode: "documents",
                                          dataSHA256: dataSHA)
            }
            let joined = tokenizer.encode(texts.joined(separator: "\n\n"), addSpecialTokens: true)
            var w = try drawJoined(joined, what: name, samples: samples, length: T, seed: seed, dataSHA256: dataSHA)
            w.note = "\(name): only \(eligible) of \(texts.count) documents are longer than \(T) tokens, fewer than the \(samples) windows asked; drawing from the documents joined by \"\\n\\n\" (\(joined.count) tokens) instead"
            return w
        case .text(let path):
            let bytes = try readDataFile(path)
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw CalibrationError("\(name): not UTF-8 text")
            }
            guard let tokenizer else { throw CalibrationError("the model has no tokenizer to encode \(name)") }
            let ids = tokenizer.encode(text, addSpecialTokens: true)
            return try drawJoined(ids, what: name, samples: samples, length: T, seed: seed,
                                  dataSHA256: bytes.withUnsafeBytes { SHA256.hexDigest($0) })
        }
    }

    static func drawJoined(_ stream: [Int32], what: String, samples: Int, length T: Int, seed: UInt64,
                           dataSHA256: String) throws -> CalibrationWindows {
        guard stream.count > T else {
            throw CalibrationError("\(what): \(stream.count) tokens, too short for one window of \(T) (a window needs more than T tokens to draw from)")
        }
        var rng = PythonRandom(seed: seed)
        var ids: [Int32] = []
        ids.reserveCapacity(samples * T)
        for _ in 0..<samples {
            let start = rng.randint(0, stream.count - T - 1)
            ids += stream[start..<start + T]
        }
        return CalibrationWindows(ids: ids, count: samples, length: T, mode: "joined", dataSHA256: dataSHA256)
    }

    static func fromTokensFile(_ path: String, vocabularySize: Int) throws -> CalibrationWindows {
        let file = try TensorFile(path: path)
        let path = file.name
        guard let entry = file.header.entry("tokens"), entry.shape.count == 2, entry.dtype.isInteger else {
            throw CalibrationError("\(path): no integer tensor 'tokens' of shape [N, T]")
        }
        let (N, T) = (entry.shape[0], entry.shape[1])
        guard N > 0, T > 0 else { throw CalibrationError("\(path): 'tokens' has shape \(entry.shape); need N ≥ 1, T ≥ 1") }
        let values = try file.integers("tokens")
        for (i, id) in values.enumerated() where id < 0 || id >= vocabularySize {
            throw CalibrationError("\(path): token id \(id) at [\(i / T), \(i % T)] is outside the vocabulary (\(vocabularySize))")
        }
        return CalibrationWindows(ids: values.map { Int32($0) }, count: N, length: T, mode: "tokens",
                                  dataSHA256: file.contentSHA256())
    }

    /// The windows as a `--tokens` file: int32 tensor `tokens` [N, T].
    public func tensor() -> (TensorEntry, [UInt8]) {
        (TensorEntry(name: "tokens", dtype: .I32, shape: [count, length]),
         ids.map { $0.littleEndian }.withUnsafeBytes { Array($0) })
    }
}

public struct CalibrationError: DiagnosedError {
    public var message: String
    public var kind: FailureKind
    public init(_ message: String, kind: FailureKind = .badData) {
        self.message = message
        self.kind = kind
    }
    public var description: String { message }
}
