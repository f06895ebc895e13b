import Foundation
import Kernels
import TensorIO
import Tokenization

/// The element type of a GGUF export's matrices (1-D tensors — norms, biases — stay F32, as in
/// llama.cpp's converter; a matrix whose rows are not a multiple of 32 values falls back from
/// Q8_0 to F16).
public enum GGUFExportType: String, CaseIterable, Sendable {
    case f32, f16, q8_0

    var ggml: GGMLType {
        switch self {
        case .f32: return .F32
        case .f16: return .F16
        case .q8_0: return .Q8_0
        }
    }

    var fileType: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q8_0: return 7
        }
    }
}

extension Model {
    /// Writes a GGUF file llama.cpp loads: architecture `llama` when every layer has the same
    /// widths, `deci` (per-layer `head_count`, `head_count_kv`, `feed_forward_length` arrays)
    /// when not; `key_length`, `value_length` and `rope.dimension_count` explicit; the rows of
    /// attn_q/attn_k permuted per layer into llama.cpp's interleaved rotary order; the tokenizer
    /// as `tokenizer.ggml.*`. Refuses what llama.cpp's deci graph would compute differently: a
    /// layer with attention but no MLP (deci skips the whole layer) and a layer without heads
    /// whose o_proj keeps a bias. A tensor beyond `largeTensor` elements (a 128k vocabulary's embedding and head)
    /// is read and written a block of rows at a time.
    public func exportGGUF(to path: String, type: GGUFExportType, largeTensor: Int = 1 << 26,
                           progress: ((Int, Int) -> Void)? = nil) throws {
        let c = config
        let L = c.numLayers, C = c.hiddenSize, D = c.headDim
        let arch = c.isUniform ? "llama" : "deci"
        guard c.valueWidths == nil else {
            throw TensorIOError.badData("\(self.path): value heads narrower than head_dim (V/O pruning); llama.cpp has one value_length for every head (nor can transformers hold them): export with --pad-values (zeros up to head_dim, the same outputs) or evaluate it with PruneKit's evaluate")
        }
        for l in 0..<L {
            if c.headCounts[l] > 0 && c.ffnWidths[l] == 0 {
                throw TensorIOError.badData("\(self.path): layer \(l) keeps attention but no MLP channels; llama.cpp's deci graph would skip the whole layer (keep at least one channel: allocate --min-keep)")
            }
            if c.headCounts[l] == 0 && hasBias(l, .o) {
                throw TensorIOError.badData("\(self.path): layer \(l) has no heads but an o_proj bias, which llama.cpp's deci graph ignores (keep at least one KV group: allocate --min-keep)")
            }
        }
        let tokenizer = try tokenizer(for: "to write into the GGUF")
        var meta: [(String, GGUFValue)] = [
            ("general.architecture", .string(arch)),
            ("general.name", .string(URL(fileURLWithPath: self.path).deletingPathExtension().lastPathComponent)),
            ("general.file_type", .uint32(type.fileType)),
            ("general.alignment", .uint32(UInt32(GGUFWriter.alignment))),
            ("\(arch).block_count", .uint32(UInt32(L))),
            ("\(arch).context_length", .uint32(UInt32(c.maxPositionEmbeddings))),
            ("\(arch).embedding_length", .uint32(UInt32(C))),
            ("\(arch).vocab_size", .uint32(UInt32(c.vocabSize))),
            ("\(arch).rope.freq_base", .float32(Float(c.ropeTheta))),
            ("\(arch).attention.layer_norm_rms_epsilon", .float32(Float(c.rmsNormEps))),
            ("\(arch).attention.key_length", .uint32(UInt32(D))),
            ("\(arch).attention.value_length", .uint32(UInt32(D))),
            ("\(arch).rope.dimension_count", .uint32(UInt32(D))),
        ]
        if arch == "llama" {
            meta += [("llama.attention.head_count", .uint32(UInt32(c.headCounts.first ?? 0))),
                     ("llama.attention.head_count_kv", .uint32(UInt32(c.kvHeadCounts.first ?? 0))),
                     ("llama.feed_forward_length", .uint32(UInt32(c.ffnWidths.first ?? 0)))]
        } else {
            meta += [("deci.attention.head_count", .array(c.headCounts.map { .int32(Int32($0)) })),
                     ("deci.attention.head_count_kv", .array(c.kvHeadCounts.map { .int32(Int32($0)) })),
                     ("deci.feed_forward_length", .array(c.ffnWidths.map { .int32(Int32($0)) }))]
        }
        var tok = try tokenizer.ggufMetadata()
        tok.removeAll { $0.0 == "tokenizer.ggml.bos_token_id" || $0.0 == "tokenizer.ggml.eos_token_id" }
        if let b = c.bosTokenID ?? tokenizer.bosTokenID.map(Int.init) { tok.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(b)))) }
        if let e = c.eosTokenID ?? tokenizer.eosTokenID.map(Int.init) { tok.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(e)))) }
        meta += tok

        // Tensors in llama.cpp names; a layer's absent attention or MLP writes nothing.
        var specs: [(GGUFWriter.TensorSpec, String)] = []
        func add(_ hf: String, _ gguf: String) {
            let shape = self.shape(hf)!
            let matrix = shape.count == 2
            var t: GGMLType = matrix ? type.ggml : .F32
            if t == .Q8_0 && shape[1] % 32 != 0 { t = .F16 }
            specs.append((GGUFWriter.TensorSpec(name: gguf, shape: shape, type: t), hf))
        }
        // LLaMA-3 rope scaling: llama.cpp divides each rotary frequency's base by the factor in
        // rope_freqs.weight [D/2], as convert_hf_to_gguf.py computes it from rope_scaling.
        var synthetic: [String: [Float]] = [:]
        if let r = c.ropeScaling {
            synthetic["rope_freqs.weight"] = llama3RopeFactors(headDim: D, theta: c.ropeTheta, scaling: r)
            specs.append((GGUFWriter.TensorSpec(name: "rope_freqs.weight", shape: [D / 2], type: .F32), ""))
        }
        add(TensorNames.embedding, "token_embd.weight")
        for l in 0..<L {
            let H = c.headCounts[l], F = c.ffnWidths[l]
            if H > 0 { add(TensorNames.inputNorm(l), "blk.\(l).attn_norm.weight") }
            for p in Projection.allCases {
                let isAttention = [Projection.q, .k, .v, .o].contains(p)
                if (isAttention && H == 0) || (!isAttention && F == 0) { continue }
                if p == .gate { add(TensorNames.postAttentionNorm(l), "blk.\(l).ffn_norm.weight") }
                add(TensorNames.weight(l, p), "blk.\(l).\(p.ggufName).weight")
                if hasBias(l, p) { add(TensorNames.bias(l, p), "blk.\(l).\(p.ggufName).bias") }
            }
        }
        add(TensorNames.finalNorm, "output_norm.weight")
        if !c.tieWordEmbeddings { add(TensorNames.head, "output.weight") }

        let writer = try GGUFWriter(path: path, metadata: meta, tensors: specs.map(\.0))
        try writer.complete {
            for (i, (spec, hf)) in specs.enumerated() {
                if let values = synthetic[spec.name] {
                    try writer.write(spec.name, values)
                } else if let (l, p, _) = TensorNames.projection(of: hf), p == .q || p == .k {
                    let rows = spec.shape[0], cols = spec.shape.count > 1 ? spec.shape[1] : 1
                    try writer.write(spec.name, rotaryRows(try floats(hf), heads: p == .q ? c.headCounts[l] : c.kvHeadCounts[l],
                                                           rows: rows, cols: cols, to: .gguf))
                } else {
                    // A large embedding or head goes a block of rows at a time (Model.forEachPart).
                    try writer.write(spec.name) { emit in try forEachPart(hf, largeTensor: largeTensor) { values, _ in try emit(values) } }
                }
                progress?(i + 1, specs.count)
            }
        }
    }
}

/// llama.cpp's per-frequency divisors for LLaMA-3 rope scaling: 1 for wavelengths shorter than
/// original/high_freq_factor, `factor` for those longer than original/low_freq_factor, and between
/// them the inverse of the interpolation transformers applies to the inverse frequency.
public func llama3RopeFactors(headDim D: Int, theta: Double, scaling r: Llama3RopeScaling) -> [Float] {
    let original = Double(r.originalMaxPositionEmbeddings)
    let lowWavelength = original / r.lowFreqFactor, highWavelength = original / r.highFreqFactor
    return (0..<(D / 2)).map { i in
        let frequency = 1 / Foundation.pow(theta, Double(2 * i) / Double(D))
        let wavelength = 2 * Double.pi / frequency
        if wavelength < highWavelength { return 1 }
        if wavelength > lowWavelength { return Float(r.factor) }
        let smooth = (original / wavelength - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor)
        return Float(1 / ((1 - smooth) / r.factor + smooth))
    }
}
