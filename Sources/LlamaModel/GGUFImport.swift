import Foundation
import TensorIO
import Tokenization

/// Imports a GGUF written by llama.cpp's converters (architectures llama, mistral-as-llama,
/// qwen2, and deci for per-layer widths). Tensor names are mapped to Hugging Face names, and the
/// rows of attn_q/attn_k, which `convert_hf_to_gguf.py` interleaves for llama and deci, are put
/// back in Hugging Face order (as transformers' `reverse_permute_weights` does on load).
final class GGUFStore: TensorStore {
    let file: GGUFFile
    let path: String
    let config: LlamaConfig
    let permutesQK: Bool
    private var infoByName: [String: GGUFTensorInfo] = [:]
    private(set) var names: [String] = []

    init(file: GGUFFile, path: String, config: LlamaConfig, permutesQK: Bool) throws {
        self.file = file
        self.path = path
        self.config = config
        self.permutesQK = permutesQK
        for t in file.tensors {
            if t.name == "rope_freqs.weight" {
                // LLaMA-3.1-style rope scaling stored as frequency factors: not yet supported.
                throw TensorIOError.badData(
                    "\(path): GGUF with rope_freqs.weight (LLaMA-3.1 rope scaling) is not supported")
            }
            guard let hf = TensorNames.fromGGUF(t.name) else {
                throw TensorIOError.badData("\(path): unknown GGUF tensor '\(t.name)'")
            }
            infoByName[hf] = t
            names.append(hf)
        }
    }

    func shape(_ name: String) -> [Int]? { infoByName[name]?.shape }

    func storageType(_ name: String) -> DType {
        switch infoByName[name]?.type {
        case .F16?: return .F16
        case .BF16?: return .BF16
        default: return .F32
        }
    }

    func floats(_ name: String) throws -> [Float] {
        guard let info = infoByName[name] else {
            throw TensorIOError.badData("\(path): tensor '\(name)' is missing")
        }
        var values = try file.dequantize(info)
        if permutesQK, let (l, p, _) = TensorNames.projection(of: name), p == .q || p == .k {
            let heads = p == .q ? config.headCounts[l] : config.kvHeadCounts[l]
            let rows = info.shape[0], cols = info.shape.count > 1 ? info.shape[1] : 1
            values = rotaryRows(values, heads: heads, rows: rows, cols: cols, to: .huggingFace)
        }
        return values
    }

    var readsRows: Bool { true }

    func rows(_ name: String, _ ids: [Int]) throws -> [Float] {
        guard let info = infoByName[name] else {
            throw TensorIOError.badData("\(path): tensor '\(name)' is missing")
        }
        if permutesQK, let (_, p, _) = TensorNames.projection(of: name), p == .q || p == .k {
            return try defaultRows(name, ids)  // rows are permuted within heads
        }
        return try file.dequantizeRows(info, ids)
    }
}

/// The two orders of the rotary pairs within each head's rows of q_proj and k_proj: Hugging Face
/// keeps the halves apart (rows i and i + half rotate together), GGUF interleaves them (rows 2i
/// and 2i + 1), as llama.cpp's converter permutes them.
enum RotaryRowOrder {
    case huggingFace, gguf
}

/// x: [rows, cols] in the other order → [rows, cols] in `order`, head by head (`rows / heads`
/// rows each).
func rotaryRows(_ x: [Float], heads: Int, rows: Int, cols: Int, to order: RotaryRowOrder) -> [Float] {
    guard heads > 0, rows > 0 else { return x }
    let perHead = rows / heads, half = perHead / 2
    var out = [Float](repeating: 0, count: x.count)
    x.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            for h in 0..<heads {
                for i in 0..<half {
                    for j in 0..<2 {
                        let interleaved = (h * perHead + 2 * i + j) * cols
                        let apart = (h * perHead + j * half + i) * cols
                        let (from, to) = order == .huggingFace ? (interleaved, apart) : (apart, interleaved)
                        for c in 0..<cols { dst[to + c] = src[from + c] }
                    }
                }
            }
        }
    }
    return out
}

extension Model {
    static func openGGUF(_ path: String) throws -> Model {
        let file = try GGUFFile(path: path)
        let meta = file.metadata
        guard let arch = meta["general.architecture"]?.string else {
            throw TensorIOError.badData("\(path): GGUF has no general.architecture")
        }
        guard ["llama", "qwen2", "deci", "mistral"].contains(arch) else {
            throw TensorIOError.badData(
                "\(path): GGUF architecture '\(arch)' is not supported (llama, qwen2, deci)")
        }
        func value(_ key: String) -> GGUFValue? { meta["\(arch).\(key)"] }
        func require(_ key: String) throws -> Int {
            guard let v = value(key)?.int, v > 0 else {
                throw TensorIOError.badData("\(path): GGUF lacks a positive \(arch).\(key)")
            }
            return v
        }
        let C = try require("embedding_length")
        let L = try require("block_count")
        do { try LlamaConfig.Limits.checkLayers(L, key: "\(arch).block_count") } catch let e as ConfigError {
            throw TensorIOError.badData("\(path): \(e.message)")
        }
        /// A per-layer size: a scalar (uniform) or an array of L entries (deci).
        func perLayer(_ key: String, default fallback: [Int]? = nil) throws -> [Int] {
            if let a = value(key)?.ints {
                guard a.count == L else {
                    throw TensorIOError.badData(
                        "\(path): \(arch).\(key) has \(a.count) entries for \(L) layers")
                }
                return a
            }
            if let v = value(key)?.int { return [Int](repeating: v, count: L) }
            if let fallback { return fallback }
            throw TensorIOError.badData("\(path): GGUF lacks \(arch).\(key)")
        }
        let heads = try perLayer("attention.head_count")
        let kvHeads = try perLayer("attention.head_count_kv", default: heads)
        let ffn = try perLayer("feed_forward_length")
        let firstHeads = heads.first(where: { $0 > 0 }) ?? 1
        let headDim = value("attention.key_length")?.int ?? (C / firstHeads)
        let tokens = meta["tokenizer.ggml.tokens"]?.array?.count
        let embedRows = file.tensor(named: "token_embd.weight")?.shape.first
        guard let vocab = value("vocab_size")?.int ?? embedRows ?? tokens else {
            throw TensorIOError.badData("\(path): cannot tell the vocabulary size")
        }
        let config: LlamaConfig
        do {
            config = try LlamaConfig(
                architecture: "llama", hiddenSize: C, numLayers: L, headDim: headDim,
                headCounts: heads, kvHeadCounts: kvHeads, ffnWidths: ffn, vocabSize: vocab,
                rmsNormEps: value("attention.layer_norm_rms_epsilon")?.double ?? 1e-5,
                ropeTheta: value("rope.freq_base")?.double ?? 10000,
                ropeScaling: nil,
                maxPositionEmbeddings: value("context_length")?.int ?? 2048,
                tieWordEmbeddings: file.tensor(named: "output.weight") == nil,
                bosTokenID: meta["tokenizer.ggml.bos_token_id"]?.int,
                eosTokenID: meta["tokenizer.ggml.eos_token_id"]?.int)
        } catch let e as ConfigError {
            throw TensorIOError.badData("\(path): \(e.message)")
        }
        let store = try GGUFStore(file: file, path: path, config: config,
                                  permutesQK: arch != "qwen2")
        var tokenizerJSON: String? = nil
        if meta["tokenizer.ggml.model"] != nil {
            let tokenizer: Tokenizer
            do { tokenizer = try Tokenizer(gguf: meta) } catch let e as TokenizerError {
                throw TensorIOError.badData("\(path): the tokenizer: \(e.message)")
            }
            tokenizerJSON = String(decoding: try tokenizer.tokenizerJSON(), as: UTF8.self)
        }
        return try Model(config: config, tokenizerJSON: tokenizerJSON, store: store, path: path)
    }
}
