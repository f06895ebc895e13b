/// Hugging Face checkpoint keys: the one place they are spelled out.
public enum Projection: String, CaseIterable, Sendable {
    case q = "self_attn.q_proj"
    case k = "self_attn.k_proj"
    case v = "self_attn.v_proj"
    case o = "self_attn.o_proj"
    case gate = "mlp.gate_proj"
    case up = "mlp.up_proj"
    case down = "mlp.down_proj"

    /// Its position in `allCases`.
    public var index: Int {
        switch self {
        case .q: return 0
        case .k: return 1
        case .v: return 2
        case .o: return 3
        case .gate: return 4
        case .up: return 5
        case .down: return 6
        }
    }

    /// The module's own name: `q_proj`, …, `down_proj`.
    public var shortName: String { String(rawValue.split(separator: ".").last!) }

    /// The projection whose module is named `q_proj`, …, `down_proj`.
    public init?(shortName: String) {
        guard let p = Projection.allCases.first(where: { $0.shortName == shortName }) else { return nil }
        self = p
    }

    /// The GGUF name of the same tensor (llama.cpp `tensor_mapping.py` naming).
    var ggufName: String {
        switch self {
        case .q: return "attn_q"
        case .k: return "attn_k"
        case .v: return "attn_v"
        case .o: return "attn_output"
        case .gate: return "ffn_gate"
        case .up: return "ffn_up"
        case .down: return "ffn_down"
        }
    }
}

public enum TensorNames {
    public static let embedding = "model.embed_tokens.weight"
    public static let finalNorm = "model.norm.weight"
    public static let head = "lm_head.weight"

    public static func inputNorm(_ l: Int) -> String { "model.layers.\(l).input_layernorm.weight" }
    public static func postAttentionNorm(_ l: Int) -> String {
        "model.layers.\(l).post_attention_layernorm.weight"
    }
    public static func weight(_ l: Int, _ p: Projection) -> String {
        "model.layers.\(l).\(p.rawValue).weight"
    }
    public static func bias(_ l: Int, _ p: Projection) -> String {
        "model.layers.\(l).\(p.rawValue).bias"
    }

    /// The decoder layer a tensor belongs to (`model.layers.L.…`), or nil.
    public static func layer(of name: String) -> Int? {
        let parts = name.split(separator: ".", maxSplits: 3)
        guard parts.count == 4, parts[0] == "model", parts[1] == "layers", let l = Int(parts[2]), l >= 0 else { return nil }
        return l
    }

    /// The layer and projection of a projection's weight or bias, or nil for any other name.
    public static func projection(of name: String) -> (layer: Int, projection: Projection, isBias: Bool)? {
        guard let l = layer(of: name) else { return nil }
        for p in Projection.allCases {
            if name == weight(l, p) { return (l, p, false) }
            if name == bias(l, p) { return (l, p, true) }
        }
        return nil
    }

    /// Maps a GGUF tensor name to its Hugging Face name, or nil for tensors PruneKit does not
    /// import (e.g. `rope_freqs.weight`, handled separately).
    static func fromGGUF(_ name: String) -> String? {
        switch name {
        case "token_embd.weight": return embedding
        case "output_norm.weight": return finalNorm
        case "output.weight": return head
        default: break
        }
        let parts = name.split(separator: ".")
        guard parts.count == 4, parts[0] == "blk", let l = Int(parts[1]), l >= 0 else { return nil }
        let what = String(parts[2]), kind = String(parts[3])
        if kind == "weight" && what == "attn_norm" { return inputNorm(l) }
        if kind == "weight" && what == "ffn_norm" { return postAttentionNorm(l) }
        guard let p = Projection.allCases.first(where: { $0.ggufName == what }) else { return nil }
        switch kind {
        case "weight": return weight(l, p)
        case "bias": return bias(l, p)
        default: return nil
        }
    }

    /// The shape a tensor must have under `config` (nil for names outside the model).
    public static func expectedShape(_ name: String, _ config: LlamaConfig) -> [Int]? {
        let C = config.hiddenSize, V = config.vocabSize
        if name == embedding || name == head { return [V, C] }
        if name == finalNorm { return [C] }
        for l in 0..<config.numLayers where name.hasPrefix("model.layers.\(l).") {
            if name == inputNorm(l) || name == postAttentionNorm(l) { return [C] }
            for p in Projection.allCases {
                let (rows, cols) = projectionShape(p, config: config, layer: l)
                if name == weight(l, p) { return [rows, cols] }
                if name == bias(l, p) { return [rows] }
            }
        }
        return nil
    }

    /// `[out, in]` of a projection of layer l (v rows and o columns follow the value widths).
    public static func projectionShape(_ p: Projection, config c: LlamaConfig, layer l: Int) -> (Int, Int) {
        switch p {
        case .v: return (c.valueRows(layer: l), c.hiddenSize)
        case .o: return (c.hiddenSize, c.attentionOutputWidth(layer: l))
        default:
            return projectionShape(p, C: c.hiddenSize, H: c.headCounts[l], Hkv: c.kvHeadCounts[l],
                                   D: c.headDim, F: c.ffnWidths[l])
        }
    }

    /// `[out, in]` of a projection in a layer with H heads, Hkv KV heads, MLP width F.
    public static func projectionShape(_ p: Projection, C: Int, H: Int, Hkv: Int, D: Int, F: Int)
        -> (Int, Int)
    {
        switch p {
        case .q: return (H * D, C)
        case .k, .v: return (Hkv * D, C)
        case .o: return (C, H * D)
        case .gate, .up: return (F, C)
        case .down: return (C, F)
        }
    }
}
