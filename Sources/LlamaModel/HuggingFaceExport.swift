import Foundation
import TensorIO

/// Writes a Hugging Face directory that stock transformers loads with
/// `AutoModelForCausalLM.from_pretrained`: config.json (LlamaForCausalLM), model.safetensors,
/// tokenizer.json and tokenizer_config.json. transformers holds one width for every layer, so
/// only uniform models export this way; biases go through `attention_bias` / `mlp_bias`, which
/// give every projection of the group a bias (zero where the model has none).
extension Model {
    public func exportHuggingFace(to directory: String, weightType: WeightType = .auto, largeTensor: Int = 1 << 26,
                                  progress: ((Int, Int) -> Void)? = nil) throws {
        let c = config
        guard c.valueWidths == nil else {
            throw TensorIOError.badData(
                "\(path): value heads narrower than head_dim (V/O pruning); transformers' LLaMA " +
                "cannot hold them (nor can llama.cpp): export with --pad-values (zeros up to head_dim, the same outputs) or evaluate it with PruneKit's evaluate")
        }
        guard c.isUniform else {
            throw TensorIOError.badData(
                "\(path): layers differ in width (heads \(Set(c.headCounts).sorted()), " +
                "MLP \(Set(c.ffnWidths).sorted())); transformers cannot hold per-layer widths: " +
                "export with --to gguf (llama.cpp's deci architecture) instead")
        }
        let attentionBias = (0..<c.numLayers).contains { l in
            [Projection.q, .k, .v, .o].contains { hasBias(l, $0) }
        }
        let mlpBias = (0..<c.numLayers).contains { l in
            [Projection.gate, .up, .down].contains { hasBias(l, $0) }
        }
        // Every tensor transformers will look for, in canonical order.
        var names: [(name: String, shape: [Int])] = [(TensorNames.embedding, [c.vocabSize, c.hiddenSize])]
        for l in 0..<c.numLayers {
            names.append((TensorNames.inputNorm(l), [c.hiddenSize]))
            for p in Projection.allCases {
                if p == .gate { names.append((TensorNames.postAttentionNorm(l), [c.hiddenSize])) }
                let shape = TensorNames.expectedShape(TensorNames.weight(l, p), c) ?? []
                names.append((TensorNames.weight(l, p), shape))
                let isAttention = [Projection.q, .k, .v, .o].contains(p)
                if (isAttention && attentionBias) || (!isAttention && mlpBias) {
                    names.append((TensorNames.bias(l, p), [shape[0]]))
                }
            }
        }
        names.append((TensorNames.finalNorm, [c.hiddenSize]))
        if !c.tieWordEmbeddings { names.append((TensorNames.head, [c.vocabSize, c.hiddenSize])) }

        let fm = FileManager.default
        let existed = fm.fileExists(atPath: directory)
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw TensorIOError.io("\(directory): cannot create directory: \(error.localizedDescription)")
        }
        let dir = URL(fileURLWithPath: directory)
        let written = ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"]
        do {
            try writeHuggingFaceFiles(dir, names: names, weightType: weightType, attentionBias: attentionBias,
                                      mlpBias: mlpBias, largeTensor: largeTensor, progress: progress)
        } catch {
            // A failed export (a full disk) leaves no partial directory: the files it wrote go, and
            // the directory too when this export made it.
            for name in written { try? fm.removeItem(at: dir.appendingPathComponent(name)) }
            if !existed { try? fm.removeItem(atPath: directory) }
            throw error
        }
    }

    private func writeHuggingFaceFiles(_ dir: URL, names: [(name: String, shape: [Int])], weightType: WeightType,
                                       attentionBias: Bool, mlpBias: Bool, largeTensor: Int,
                                       progress: ((Int, Int) -> Void)?) throws {
        let c = config
        let dtypeName: String
        switch weightType {
        case .f16: dtypeName = "float16"
        case .bf16: dtypeName = "bfloat16"
        default: dtypeName = "float32"
        }
        let fileType: DType = weightType == .f16 ? .F16 : weightType == .bf16 ? .BF16 : .F32
        let entries = names.map { TensorEntry(name: $0.name, dtype: fileType, shape: $0.shape) }
        let writer = try TensorFileWriter(
            path: dir.appendingPathComponent("model.safetensors").path, entries: entries,
            metadata: ["format": "pt"], compress: false)
        try writer.complete {
            for (i, entry) in entries.enumerated() {
                if shape(entry.name) != nil {
                    // A large embedding or head goes a block of rows at a time (Model.forEachPart).
                    try writer.write(entry.name) { part in
                        try forEachPart(entry.name, largeTensor: largeTensor) { values, _ in
                            try values.withUnsafeBufferPointer { try part($0) }
                        }
                    }
                } else {
                    try writer.write(entry.name, floats: [Float](repeating: 0, count: entry.elementCount))  // an absent bias
                }
                progress?(i + 1, entries.count)
            }
        }
        var hf: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_act": "silu", "hidden_size": c.hiddenSize,
            "intermediate_size": c.ffnWidths.first ?? 0,
            "num_hidden_layers": c.numLayers,
            "num_attention_heads": c.headCounts.first ?? 0,
            "num_key_value_heads": c.kvHeadCounts.first ?? 0,
            "head_dim": c.headDim, "rms_norm_eps": c.rmsNormEps, "rope_theta": c.ropeTheta,
            "max_position_embeddings": c.maxPositionEmbeddings,
            "tie_word_embeddings": c.tieWordEmbeddings, "vocab_size": c.vocabSize,
            "attention_bias": attentionBias, "mlp_bias": mlpBias,
            "torch_dtype": dtypeName, "initializer_range": 0.02,
        ]
        if let s = c.ropeScaling {
            hf["rope_scaling"] = [
                "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.lowFreqFactor,
                "high_freq_factor": s.highFreqFactor,
                "original_max_position_embeddings": s.originalMaxPositionEmbeddings,
            ]
        } else {
            hf["rope_scaling"] = NSNull()
        }
        if let b = c.bosTokenID { hf["bos_token_id"] = b }
        if let e = c.eosTokenID { hf["eos_token_id"] = e }
        try writeJSON(hf, to: dir.appendingPathComponent("config.json"))
        if let tokenizerJSON {
            try writeText(tokenizerJSON, to: dir.appendingPathComponent("tokenizer.json").path)
            var tc: [String: Any] = [
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": c.maxPositionEmbeddings,
                "clean_up_tokenization_spaces": false,
            ]
            let special = try specialTokenContents(tokenizerJSON, model: path)
            if let b = c.bosTokenID, let s = special[b] { tc["bos_token"] = s }
            if let e = c.eosTokenID, let s = special[e] { tc["eos_token"] = s }
            try writeJSON(tc, to: dir.appendingPathComponent("tokenizer_config.json"))
        }
    }
}

/// id → content of the added tokens of a tokenizer.json (none when it lists none); `model` is the
/// path of the model that carries it, for the message when it is not JSON.
private func specialTokenContents(_ json: String, model: String) throws -> [Int: String] {
    let parsed: JSONValue
    do { parsed = try JSONValue.parse(Array(json.utf8)) } catch {
        throw TensorIOError.badData("\(model): the tokenizer: \(error)")
    }
    guard let added = parsed["added_tokens"]?.items else { return [:] }
    var out: [Int: String] = [:]
    for token in added {
        if let id = token["id"]?.int, let content = token["content"]?.string {
            out[id] = content
        }
    }
    return out
}

private func writeJSON(_ object: Any, to url: URL) throws {
    let data = try JSONSerialization.data(withJSONObject: object,
                                          options: [.prettyPrinted, .sortedKeys])
    try writeText(String(decoding: data, as: UTF8.self) + "\n", to: url.path)
}
