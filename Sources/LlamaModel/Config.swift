import Foundation
import Kernels
import TensorIO

/// The configuration of a LLaMA-family decoder (LLaMA-1/2/3, Mistral, Qwen2, SmolLM2), with
/// per-layer sizes always as arrays so that a pruned model whose layers differ is described
/// exactly as a dense one. A layer may have zero heads or zero MLP channels.
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var architecture: String
    public var hiddenSize: Int
    public var numLayers: Int
    public var headDim: Int
    public var headCounts: [Int]
    public var kvHeadCounts: [Int]
    public var ffnWidths: [Int]
    /// Per layer, per KV head, the width of its value vectors, when some are narrower than
    /// `headDim` (FASP's V/O pruning removes single value dimensions: row d of v_proj with the
    /// o_proj columns that read it); nil when every value head has `headDim` values, as in every
    /// stock model. See `valueWidths(layer:)`.
    public var valueWidths: [[Int]]?
    public var vocabSize: Int
    public var rmsNormEps: Double
    public var ropeTheta: Double
    /// LLaMA-3 frequency-dependent RoPE scaling (`rope_type: "llama3"`), the only kind supported.
    public var ropeScaling: Llama3RopeScaling?
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var bosTokenID: Int?
    public var eosTokenID: Int?

    enum CodingKeys: String, CodingKey {
        case architecture
        case hiddenSize = "hidden_size"
        case numLayers = "num_hidden_layers"
        case headDim = "head_dim"
        case headCounts = "head_counts"
        case kvHeadCounts = "kv_head_counts"
        case ffnWidths = "ffn_widths"
        case valueWidths = "value_widths"
        case vocabSize = "vocab_size"
        case rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case bosTokenID = "bos_token_id"
        case eosTokenID = "eos_token_id"
    }

    public init(
        architecture: String = "llama", hiddenSize: Int, numLayers: Int, headDim: Int,
        headCounts: [Int], kvHeadCounts: [Int], ffnWidths: [Int], valueWidths: [[Int]]? = nil, vocabSize: Int,
        rmsNormEps: Double, ropeTheta: Double, ropeScaling: Llama3RopeScaling? = nil,
        maxPositionEmbeddings: Int, tieWordEmbeddings: Bool, bosTokenID: Int? = nil,
        eosTokenID: Int? = nil
    ) throws {
        self.architecture = architecture
        self.hiddenSize = hiddenSize
        self.numLayers = numLayers
        self.headDim = headDim
        self.headCounts = headCounts
        self.kvHeadCounts = kvHeadCounts
        self.ffnWidths = ffnWidths
        self.valueWidths = valueWidths
        self.vocabSize = vocabSize
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.bosTokenID = bosTokenID
        self.eosTokenID = eosTokenID
        try validate()
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        architecture = try c.decode(String.self, forKey: .architecture)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        numLayers = try c.decode(Int.self, forKey: .numLayers)
        headDim = try c.decode(Int.self, forKey: .headDim)
        headCounts = try c.decode([Int].self, forKey: .headCounts)
        kvHeadCounts = try c.decode([Int].self, forKey: .kvHeadCounts)
        ffnWidths = try c.decode([Int].self, forKey: .ffnWidths)
        valueWidths = try c.decodeIfPresent([[Int]].self, forKey: .valueWidths)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        ropeTheta = try c.decode(Double.self, forKey: .ropeTheta)
        ropeScaling = try c.decodeIfPresent(Llama3RopeScaling.self, forKey: .ropeScaling)
        maxPositionEmbeddings = try c.decode(Int.self, forKey: .maxPositionEmbeddings)
        tieWordEmbeddings = try c.decode(Bool.self, forKey: .tieWordEmbeddings)
        bosTokenID = try c.decodeIfPresent(Int.self, forKey: .bosTokenID)
        eosTokenID = try c.decodeIfPresent(Int.self, forKey: .eosTokenID)
        try validate()
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(architecture, forKey: .architecture)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(numLayers, forKey: .numLayers)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(headCounts, forKey: .headCounts)
        try c.encode(kvHeadCounts, forKey: .kvHeadCounts)
        try c.encode(ffnWidths, forKey: .ffnWidths)
        // Only when present, so that a model without narrowed value heads keeps its bytes.
        try c.encodeIfPresent(valueWidths, forKey: .valueWidths)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        // Always written (null when absent), so that a reader sees the field.
        try c.encode(ropeScaling, forKey: .ropeScaling)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encodeIfPresent(bosTokenID, forKey: .bosTokenID)
        try c.encodeIfPresent(eosTokenID, forKey: .eosTokenID)
    }

    /// The largest sizes a configuration may give (well beyond every published LLaMA-family
    /// model: LLaMA-3.1-405B has 126 layers, hidden 16384, MLP 53248, vocabulary 128256), checked
    /// before anything is allocated from them, so that no product of them overflows.
    public enum Limits {
        public static let layers = 1024
        public static let hiddenSize = 1 << 17
        public static let heads = 1024
        public static let headDim = 1024
        public static let ffnWidth = 1 << 20
        public static let vocabSize = 1 << 22
        public static let positions = 1 << 24

        /// A layer count read from a file, checked before per-layer arrays are made from it.
        public static func checkLayers(_ L: Int, key: String) throws {
            guard L > 0 && L <= layers else { throw ConfigError("\(key) must be in 1…\(layers), got \(L)") }
        }
    }

    /// Checks every size; a configuration that passes can be walked without bounds surprises.
    public func validate() throws {
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws {
            if !ok { throw ConfigError(message()) }
        }
        try check(hiddenSize > 0 && hiddenSize <= Limits.hiddenSize,
                  "hidden_size must be in 1…\(Limits.hiddenSize), got \(hiddenSize)")
        try Limits.checkLayers(numLayers, key: "num_hidden_layers")
        try check(headDim > 0 && headDim % 2 == 0 && headDim <= Limits.headDim,
                  "head_dim must be positive, even and at most \(Limits.headDim), got \(headDim)")
        try check(vocabSize > 0 && vocabSize <= Limits.vocabSize,
                  "vocab_size must be in 1…\(Limits.vocabSize), got \(vocabSize)")
        for (key, id) in [("bos_token_id", bosTokenID), ("eos_token_id", eosTokenID)] {
            if let id { try check(id >= 0 && id < vocabSize, "\(key) \(id) is outside the vocabulary (\(vocabSize))") }
        }
        try check(headCounts.count == numLayers,
                  "head_counts has \(headCounts.count) entries for \(numLayers) layers")
        try check(kvHeadCounts.count == numLayers,
                  "kv_head_counts has \(kvHeadCounts.count) entries for \(numLayers) layers")
        try check(ffnWidths.count == numLayers,
                  "ffn_widths has \(ffnWidths.count) entries for \(numLayers) layers")
        for l in 0..<numLayers {
            let h = headCounts[l], kv = kvHeadCounts[l]
            try check(h >= 0 && kv >= 0 && ffnWidths[l] >= 0,
                      "layer \(l) has a negative size (heads \(h), KV heads \(kv), MLP \(ffnWidths[l]))")
            try check(h <= Limits.heads && ffnWidths[l] <= Limits.ffnWidth,
                      "layer \(l) has \(h) heads or an MLP of \(ffnWidths[l]) (at most \(Limits.heads) and \(Limits.ffnWidth))")
            try check((h == 0) == (kv == 0), "layer \(l) has \(h) heads but \(kv) KV heads")
            try check(kv == 0 || h % kv == 0,
                      "layer \(l): \(h) heads are not a multiple of \(kv) KV heads")
        }
        if let widths = valueWidths {
            try check(widths.count == numLayers,
                      "value_widths has \(widths.count) entries for \(numLayers) layers")
            for l in 0..<numLayers {
                try check(widths[l].count == kvHeadCounts[l],
                          "layer \(l): value_widths has \(widths[l].count) entries for \(kvHeadCounts[l]) KV heads")
                try check(widths[l].allSatisfy { $0 >= 0 && $0 <= headDim },
                          "layer \(l): value widths \(widths[l]) must lie in 0...\(headDim)")
            }
        }
        try check(rmsNormEps > 0 && rmsNormEps.isFinite, "rms_norm_eps must be positive")
        try check(ropeTheta > 0 && ropeTheta.isFinite, "rope_theta must be positive")
        try check(maxPositionEmbeddings > 0 && maxPositionEmbeddings <= Limits.positions,
                  "max_position_embeddings must be in 1…\(Limits.positions), got \(maxPositionEmbeddings)")
    }

    /// True when every layer has the same widths (a model stock transformers can hold).
    public var isUniform: Bool {
        Set(headCounts).count == 1 && Set(kvHeadCounts).count == 1 && Set(ffnWidths).count == 1
    }

    /// The value widths of layer l's KV heads (`headDim` each unless narrowed).
    public func valueWidths(layer l: Int) -> [Int] {
        valueWidths?[l] ?? [Int](repeating: headDim, count: kvHeadCounts[l])
    }

    /// Where layer l's values lie in v_proj's rows and o_proj's columns.
    public func valueLayout(layer l: Int) -> ValueLayout {
        ValueLayout(widths: valueWidths(layer: l),
                    headsPerGroup: kvHeadCounts[l] == 0 ? 0 : headCounts[l] / kvHeadCounts[l])
    }

    /// Rows of layer l's v_proj: the sum of its KV heads' value widths.
    public func valueRows(layer l: Int) -> Int { valueLayout(layer: l).rowCount }

    /// Columns of layer l's o_proj (its attention output).
    public func attentionOutputWidth(layer l: Int) -> Int { valueLayout(layer: l).columnCount }

    /// The configuration with `valueWidths` set, or nil when every width is `headDim` again.
    public func withValueWidths(_ widths: [[Int]]) -> LlamaConfig {
        var c = self
        c.valueWidths = widths.allSatisfy { $0.allSatisfy { $0 == headDim } } ? nil : widths
        return c
    }

    /// The configuration as the JSON stored in a model file's `__metadata__["config"]`
    /// (keys sorted, so that the same configuration always gives the same bytes).
    public func jsonString() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    public static func fromJSON(_ text: String) throws -> LlamaConfig {
        do {
            return try JSONDecoder().decode(LlamaConfig.self, from: Data(text.utf8))
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError("invalid model configuration: \(describeDecodingError(error))")
        }
    }
}

public struct ConfigError: DiagnosedError {
    public var message: String
    public var kind: FailureKind { .badData }
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The JSON form of LLaMA-3 rope scaling, as transformers 4 writes `rope_scaling` (older
/// configurations spell `rope_type` as `type`), validated on decoding.
extension Llama3RopeScaling: Codable {
    enum CodingKeys: String, CodingKey {
        case ropeType = "rope_type"
        case type
        case factor
        case lowFreqFactor = "low_freq_factor"
        case highFreqFactor = "high_freq_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let kind = try c.decodeIfPresent(String.self, forKey: .ropeType)
            ?? c.decodeIfPresent(String.self, forKey: .type) ?? "(none)"
        guard kind == "llama3" else {
            throw ConfigError("rope_scaling of type '\(kind)' is not supported (only llama3)")
        }
        try self.init(checkedFactor: c.decode(Double.self, forKey: .factor),
                      lowFreqFactor: c.decode(Double.self, forKey: .lowFreqFactor),
                      highFreqFactor: c.decode(Double.self, forKey: .highFreqFactor),
                      originalMaxPositionEmbeddings: c.decode(Int.self, forKey: .originalMaxPositionEmbeddings))
    }

    /// The scaling, or a `ConfigError` naming the values that cannot be right.
    init(checkedFactor factor: Double, lowFreqFactor: Double, highFreqFactor: Double,
         originalMaxPositionEmbeddings: Int) throws {
        guard factor > 0, lowFreqFactor > 0, highFreqFactor > lowFreqFactor, originalMaxPositionEmbeddings > 0 else {
            throw ConfigError("rope scaling has invalid values (factor \(factor), low_freq_factor \(lowFreqFactor), " +
                "high_freq_factor \(highFreqFactor), original_max_position_embeddings \(originalMaxPositionEmbeddings))")
        }
        self.init(factor: factor, lowFreqFactor: lowFreqFactor, highFreqFactor: highFreqFactor,
                  originalMaxPositionEmbeddings: originalMaxPositionEmbeddings)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode("llama3", forKey: .ropeType)
        try c.encode(factor, forKey: .factor)
        try c.encode(lowFreqFactor, forKey: .lowFreqFactor)
        try c.encode(highFreqFactor, forKey: .highFreqFactor)
        try c.encode(originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
    }
}

/// A one-line account of a Decodable failure (which key, what was wrong).
func describeDecodingError(_ error: Error) -> String {
    guard let e = error as? DecodingError else { return "\(error)" }
    func path(_ ctx: DecodingError.Context) -> String {
        ctx.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
    }
    switch e {
    case .keyNotFound(let key, let ctx):
        let p = path(ctx)
        return "missing key '\(p.isEmpty ? key.stringValue : p + "." + key.stringValue)'"
    case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx):
        return "'\(path(ctx))': \(ctx.debugDescription)"
    case .dataCorrupted(let ctx):
        if let underlying = ctx.underlyingError as? ConfigError { return underlying.message }
        return path(ctx).isEmpty ? ctx.debugDescription : "'\(path(ctx))': \(ctx.debugDescription)"
    @unknown default:
        return "\(e)"
    }
}
