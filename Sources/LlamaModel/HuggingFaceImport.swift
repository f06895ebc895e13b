import Foundation
import Kernels
import TensorIO

/// The subset of a Hugging Face `config.json` that LLaMA, Mistral and Qwen2 share, decoded
/// with explicit keys and validated (`model_type` decides the defaults that differ).
struct HuggingFaceConfig: Decodable {
    var modelType: String
    var hiddenSize: Int
    var intermediateSize: Int
    var numHiddenLayers: Int
    var numAttentionHeads: Int
    var numKeyValueHeads: Int?
    var headDim: Int?
    var rmsNormEps: Double
    var rope: RotarySettings
    var maxPositionEmbeddings: Int?
    var tieWordEmbeddings: Bool?
    var vocabSize: Int
    var bosTokenID: Int?
    var eosTokenID: Int?
    /// The attention span when it is a sliding window (Mistral's `sliding_window`, Qwen2's when
    /// `use_sliding_window`): not implemented, so the context is capped to it (see `llamaConfig`).
    var slidingWindow: Int?

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim"
        case rmsNormEps = "rms_norm_eps"
        case maxPositionEmbeddings = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case vocabSize = "vocab_size"
        case bosTokenID = "bos_token_id"
        case eosTokenID = "eos_token_id"
        case slidingWindow = "sliding_window"
        case useSlidingWindow = "use_sliding_window"
        case hiddenAct = "hidden_act"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decode(String.self, forKey: .modelType)
        guard ["llama", "mistral", "qwen2"].contains(modelType) else {
            throw ConfigError("model_type '\(modelType)' is not supported (llama, mistral, qwen2)")
        }
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads)
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
        rmsNormEps = try c.decode(Double.self, forKey: .rmsNormEps)
        rope = try RotarySettings(from: decoder)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings)
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        bosTokenID = try c.decodeIfPresent(Int.self, forKey: .bosTokenID)
        // LLaMA-3.1 lists several end tokens; the first is the one a generator stops at.
        eosTokenID = try c.decodeIfPresent(OneOrMany.self, forKey: .eosTokenID)?.first
        if let act = try c.decodeIfPresent(String.self, forKey: .hiddenAct), act != "silu" {
            throw ConfigError("hidden_act '\(act)' is not supported (silu)")
        }
        let window = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        // LLaMA has no such key; Mistral applies it whenever set; Qwen2 only with use_sliding_window.
        let applies = modelType == "qwen2" ? (try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) ?? false) : true
        if let window, applies {
            guard window > 0 else { throw ConfigError("sliding_window must be positive, got \(window)") }
            slidingWindow = window
        }
    }

    func llamaConfig() throws -> LlamaConfig {
        guard numAttentionHeads > 0 else {
            throw ConfigError("num_attention_heads must be positive, got \(numAttentionHeads)")
        }
        let L = numHiddenLayers
        try LlamaConfig.Limits.checkLayers(L, key: "num_hidden_layers")
        return try LlamaConfig(
            architecture: "llama", hiddenSize: hiddenSize, numLayers: L,
            headDim: headDim ?? hiddenSize / numAttentionHeads,
            headCounts: Array(repeating: numAttentionHeads, count: max(L, 0)),
            kvHeadCounts: Array(repeating: numKeyValueHeads ?? numAttentionHeads, count: max(L, 0)),
            ffnWidths: Array(repeating: intermediateSize, count: max(L, 0)),
            vocabSize: vocabSize, rmsNormEps: rmsNormEps, ropeTheta: rope.theta,
            ropeScaling: rope.scaling,
            // Within a sliding window of W tokens, sliding-window attention is full causal attention:
            // the context is capped to W, so that every longer run is refused rather than computed wrongly.
            maxPositionEmbeddings: min(maxPositionEmbeddings ?? 2048, slidingWindow ?? Int.max),
            // transformers' default differs: LLaMA/Mistral untied, Qwen2 tied.
            tieWordEmbeddings: tieWordEmbeddings ?? (modelType == "qwen2"),
            bosTokenID: bosTokenID, eosTokenID: eosTokenID)
    }
}

/// A token id given alone or as a list (`eos_token_id: 2` or `[128001, 128008, 128009]`).
struct OneOrMany: Decodable {
    var first: Int?

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let ids = try? c.decode([Int].self) {  // not a list: decoded as one id below, which says why if it is neither
            first = ids.first
        } else {
            first = try c.decode(Int.self)
        }
    }
}

/// θ and the LLaMA-3 scaling of a Hugging Face configuration, from either layout:
/// transformers 4's top-level `rope_theta` and `rope_scaling`, or transformers 5's
/// `rope_parameters` (`{"rope_theta": …, "rope_type": "default" | "llama3", factors…}`).
/// A value is taken from wherever the configuration states it; θ falls back to transformers'
/// default 10000 only when no key states it. Two statements that disagree, an unknown
/// `rope_type`, or a partial rotary factor other than 1 are refused.
struct RotarySettings {
    var theta: Double
    var scaling: Llama3RopeScaling?

    enum CodingKeys: String, CodingKey {
        case ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling"
        case ropeParameters = "rope_parameters"
    }

    /// One rotary block (`rope_scaling` or `rope_parameters`) with every field optional.
    struct Fields: Decodable, Equatable {
        var ropeType: String?
        var type: String?
        var ropeTheta: Double?
        var factor: Double?
        var lowFreqFactor: Double?
        var highFreqFactor: Double?
        var originalMaxPositionEmbeddings: Int?
        var partialRotaryFactor: Double?

        enum CodingKeys: String, CodingKey {
            case ropeType = "rope_type", type, ropeTheta = "rope_theta", factor
            case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
            case originalMaxPositionEmbeddings = "original_max_position_embeddings"
            case partialRotaryFactor = "partial_rotary_factor"
        }

        /// `rope_type` (older files: `type`); "default" when neither is given.
        var kind: String { ropeType ?? type ?? "default" }

        /// The LLaMA-3 scaling these fields describe (nil for "default"), or why not.
        func scaling(_ key: String) throws -> Llama3RopeScaling? {
            if let p = partialRotaryFactor, p != 1 {
                throw ConfigError("\(key).partial_rotary_factor \(p) is not supported (only 1)")
            }
            switch kind {
            case "default": return nil
            case "llama3":
                guard let factor, let lowFreqFactor, let highFreqFactor, let originalMaxPositionEmbeddings else {
                    throw ConfigError("\(key) of rope_type llama3 lacks factor, low_freq_factor, high_freq_factor or original_max_position_embeddings")
                }
                return try Llama3RopeScaling(checkedFactor: factor, lowFreqFactor: lowFreqFactor,
                                             highFreqFactor: highFreqFactor,
                                             originalMaxPositionEmbeddings: originalMaxPositionEmbeddings)
            default:
                throw ConfigError("\(key).rope_type '\(kind)' is not supported (default, llama3)")
            }
        }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let topTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
        let topScaling = try c.decodeIfPresent(Fields.self, forKey: .ropeScaling)
        let parameters = try c.decodeIfPresent(Fields.self, forKey: .ropeParameters)
        let scalingFromTop = try topScaling?.scaling("rope_scaling")
        var theta = topTheta, scaling = scalingFromTop
        if let p = parameters {
            if let t = p.ropeTheta {
                if let top = topTheta, top != t {
                    throw ConfigError("rope_theta \(top) and rope_parameters.rope_theta \(t) contradict each other")
                }
                theta = t
            }
            let fromParameters = try p.scaling("rope_parameters")
            if topScaling != nil, fromParameters != scalingFromTop {
                throw ConfigError("rope_scaling and rope_parameters describe different rotary scalings")
            }
            scaling = fromParameters
        }
        self.theta = theta ?? 10000
        self.scaling = scaling
    }
}

/// The tensors of one or many safetensors files (`model.safetensors`, or the shards that
/// `model.safetensors.index.json` names).
final class SafetensorsStore: TensorStore {
    private var files: [TensorFile] = []
    private var location: [String: (file: Int, entry: TensorEntry)] = [:]
    private(set) var names: [String] = []
    let path: String

    init(directory: String) throws {
        path = directory
        let dir = URL(fileURLWithPath: directory)
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        var shardNames: [String]
        if FileManager.default.fileExists(atPath: index.path) {
            shardNames = try Self.shards(fromIndex: index)
        } else {
            shardNames = ["model.safetensors"]
        }
        for shard in shardNames {
            let file = try TensorFile(path: dir.appendingPathComponent(shard).path)
            for entry in file.header.entries {
                if location[entry.name] != nil {
                    throw TensorIOError.badData(
                        "\(directory): tensor '\(entry.name)' appears in two shards")
                }
                location[entry.name] = (files.count, entry)
                names.append(entry.name)
            }
            files.append(file)
        }
    }

    private static func shards(fromIndex url: URL) throws -> [String] {
        struct Index: Decodable { var weight_map: [String: String] }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TensorIOError.io("\(url.path): \(error.localizedDescription)")
        }
        let index: Index
        do { index = try JSONDecoder().decode(Index.self, from: data) } catch {
            throw TensorIOError.badData("\(url.path): not a safetensors index: \(describeDecodingError(error))")
        }
        for shard in index.weight_map.values where shard.contains("/") || shard.hasPrefix(".") {
            throw TensorIOError.badData("\(url.path): shard name '\(shard)' leaves the directory")
        }
        return Array(Set(index.weight_map.values)).sorted()
    }

    func shape(_ name: String) -> [Int]? { location[name]?.entry.shape }

    func storageType(_ name: String) -> DType {
        switch location[name]?.entry.dtype {
        case .F16?: return .F16
        case .BF16?: return .BF16
        default: return .F32
        }
    }

    func floats(_ name: String) throws -> [Float] { try files[floatFile(name)].floats(name) }
    func rows(_ name: String, _ ids: [Int]) throws -> [Float] { try files[floatFile(name)].floatRows(name, ids) }
    var readsRows: Bool { true }

    /// The shard holding tensor `name`, which must be of a float type.
    private func floatFile(_ name: String) throws -> Int {
        guard let (i, entry) = location[name] else {
            throw TensorIOError.badData("\(path): tensor '\(name)' is missing")
        }
        guard [.F32, .F16, .BF16, .F64].contains(entry.dtype) else {
            throw TensorIOError.badData(
                "\(path): tensor '\(name)' has dtype \(entry.dtype.rawValue); expected a float type")
        }
        return i
    }
}

extension LlamaConfig {
    /// The configuration a Hugging Face `config.json` describes (transformers 4 or 5 layout).
    public static func fromHuggingFace(_ json: Data) throws -> LlamaConfig {
        do {
            return try JSONDecoder().decode(HuggingFaceConfig.self, from: json).llamaConfig()
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError(describeDecodingError(error))
        }
    }
}

extension Model {
    static func openHuggingFaceDirectory(_ path: String) throws -> Model {
        let dir = URL(fileURLWithPath: path)
        let configURL = dir.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            throw TensorIOError.missing("\(path): no config.json in the directory")
        }
        // Read through the file layer, so that a config.json that exists but cannot be read (no
        // permission, a directory) says so rather than being reported missing.
        let data = Data(try readDataFile(configURL.path))
        let config: LlamaConfig
        do {
            config = try LlamaConfig.fromHuggingFace(data)
        } catch let e as ConfigError {
            throw TensorIOError.badData("\(configURL.path): \(e.message)")
        }
        let store = try SafetensorsStore(directory: path)
        let tokenizerURL = dir.appendingPathComponent("tokenizer.json")
        var tokenizer: String?
        if FileManager.default.fileExists(atPath: tokenizerURL.path) {
            let bytes = try readDataFile(tokenizerURL.path)
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw TensorIOError.badData("\(tokenizerURL.path): not valid UTF-8 (JSON is UTF-8 text)")
            }
            tokenizer = text
        }
        return try Model(config: config, tokenizerJSON: tokenizer, store: store, path: path)
    }
}
