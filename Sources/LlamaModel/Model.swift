import Foundation
import TensorIO
import Tokenization

/// Where a model's tensors come from, by Hugging Face name. Random-access stores answer in any
/// order; a stream (a model file on standard input) only in file order, which is the order in
/// which `Model` asks: embedding, layer 0, layer 1, …, final norm, head.
protocol TensorStore: AnyObject {
    /// The Hugging Face names present, in the store's own order.
    var names: [String] { get }
    func shape(_ name: String) -> [Int]?
    /// The element type a model file keeps for this tensor by default (quantised → F32).
    func storageType(_ name: String) -> DType
    func floats(_ name: String) throws -> [Float]
    /// Rows `ids` of a tensor [rows, …] as Float [ids.count, row length]. A random-access store
    /// reads those rows alone; the default widens the whole tensor and gathers them.
    func rows(_ name: String, _ ids: [Int]) throws -> [Float]
    /// Whether `rows` reads the rows alone, any number of times (a stream reads each tensor once).
    var readsRows: Bool { get }
}

extension TensorStore {
    var readsRows: Bool { false }
    func rows(_ name: String, _ ids: [Int]) throws -> [Float] { try defaultRows(name, ids) }

    /// The whole tensor widened, then rows `ids` gathered.
    func defaultRows(_ name: String, _ ids: [Int]) throws -> [Float] {
        let all = try floats(name)
        let count = shape(name)?.first ?? 1, width = all.count / max(count, 1)
        var out = [Float](repeating: 0, count: ids.count * width)
        for (i, id) in ids.enumerated() {
            guard id >= 0 && id < count else { throw TensorIOError.badData("tensor '\(name)': row \(id) is outside its \(count) rows") }
            out.replaceSubrange((i * width)..<((i + 1) * width), with: all[(id * width)..<((id + 1) * width)])
        }
        return out
    }
}

/// A LLaMA-family model opened from a GGUF file, a Hugging Face directory or a PruneKit model
/// file (or `-`, a model file on standard input), walked one tensor and one layer at a time.
public final class Model {
    public let config: LlamaConfig
    /// tokenizer.json text, when the source has a tokenizer.
    public let tokenizerJSON: String?
    /// Metadata of the source when it is a PruneKit model file (empty otherwise).
    public let sourceMetadata: [String: String]
    public let path: String
    let store: TensorStore
    private var cachedFingerprint: String?

    init(config: LlamaConfig, tokenizerJSON: String?, store: TensorStore, path: String,
         metadata: [String: String] = [:]) throws {
        self.config = config
        self.tokenizerJSON = tokenizerJSON
        self.store = store
        self.path = path
        self.sourceMetadata = metadata
        self.cachedFingerprint = metadata["fingerprint"]
        try checkTensors()
    }

    /// Opens any of the three model forms, deciding by what the path is.
    public static func open(_ path: String) throws -> Model {
        if path == "-" { return try openModelFile(path) }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TensorIOError.missing("\(path): no such file or directory")
        }
        if isDirectory.boolValue { return try openHuggingFaceDirectory(path) }
        // A pipe or device is read once, as a stream (sniffing it first would consume its start).
        if !isRegularFile(path) { return try openModelFile(path, stream: true) }
        if try isGGUFFile(path: path) { return try openGGUF(path) }
        return try openModelFile(path)
    }

    /// Tensor names present, in the canonical order (embedding, layers, final norm, head).
    public var tensorNames: [String] {
        var out = [TensorNames.embedding]
        for l in 0..<config.numLayers { out += layerTensorNames(l) }
        out.append(TensorNames.finalNorm)
        if !config.tieWordEmbeddings { out.append(TensorNames.head) }
        return out
    }

    /// The tensor names of layer l, in canonical order.
    public func layerTensorNames(_ l: Int) -> [String] {
        var out = [TensorNames.inputNorm(l)]
        for p in Projection.allCases {
            if p == .gate { out.append(TensorNames.postAttentionNorm(l)) }
            out.append(TensorNames.weight(l, p))
            if hasBias(l, p) { out.append(TensorNames.bias(l, p)) }
        }
        return out
    }

    public func hasBias(_ l: Int, _ p: Projection) -> Bool {
        store.shape(TensorNames.bias(l, p)) != nil
    }

    public func shape(_ name: String) -> [Int]? { store.shape(name) }
    public func storageType(_ name: String) -> DType { store.storageType(name) }

    public func floats(_ name: String) throws -> [Float] { try store.floats(name) }

    public func embedding() throws -> [Float] { try floats(TensorNames.embedding) }
    /// The embedding rows of `ids` [ids.count, C], read without widening the rest of the table
    /// where the model's file allows (a 128k vocabulary's embedding is 2 GB as F32).
    public func embeddingRows(_ ids: [Int]) throws -> [Float] { try store.rows(TensorNames.embedding, ids) }
    /// Whether a tensor's rows (`embeddingRows`, an untied head's blocks) are read alone and may be
    /// read again (not a stream).
    public var readsRowsAlone: Bool { store.readsRows }
    public func finalNorm() throws -> [Float] { try floats(TensorNames.finalNorm) }
    /// The output head [V, C], or nil when it is tied to the embedding.
    public func head() throws -> [Float]? {
        config.tieWordEmbeddings ? nil : try floats(TensorNames.head)
    }

    /// The weights of decoder layer `l`, read in file order.
    public func layer(_ l: Int) throws -> LayerWeights {
        func linear(_ p: Projection) throws -> Linear {
            let (rows, cols) = TensorNames.projectionShape(p, config: config, layer: l)
            let w = try floats(TensorNames.weight(l, p))
            let b = hasBias(l, p) ? try floats(TensorNames.bias(l, p)) : nil
            return Linear(weight: w, bias: b, outFeatures: rows, inFeatures: cols)
        }
        let inputNorm = try floats(TensorNames.inputNorm(l))
        let q = try linear(.q), k = try linear(.k), v = try linear(.v), o = try linear(.o)
        let post = try floats(TensorNames.postAttentionNorm(l))
        let gate = try linear(.gate), up = try linear(.up), down = try linear(.down)
        return LayerWeights(inputNorm: inputNorm, q: q, k: k, v: v, o: o,
                            postAttentionNorm: post, gate: gate, up: up, down: down)
    }

    /// Every tensor the configuration needs is present with its shape; nothing else is.
    private func checkTensors() throws {
        let wanted = tensorNames
        for name in wanted {
            guard let shape = store.shape(name) else {
                throw TensorIOError.badData("\(path): tensor '\(name)' is missing")
            }
            if let expected = TensorNames.expectedShape(name, config), expected != shape {
                throw TensorIOError.badData(
                    "\(path): tensor '\(name)' has shape \(shape), expected \(expected) " +
                    "from the configuration")
            }
        }
        let known = Set(wanted)
        for name in store.names where !known.contains(name) {
            // A tied checkpoint may still carry lm_head.weight; it is ignored.
            if name == TensorNames.head && config.tieWordEmbeddings { continue }
            throw TensorIOError.badData("\(path): unexpected tensor '\(name)'")
        }
    }

    /// The model's fingerprint: for a PruneKit model file the one it carries; otherwise the
    /// sha256 of the configuration and every tensor's values (see `Fingerprint`).
    public func fingerprint() throws -> String {
        if let f = cachedFingerprint { return f }
        let f = try Fingerprint.compute(model: self)
        cachedFingerprint = f
        return f
    }

    /// Parameter count of the decoder layers' linear weights and biases (what pruning removes).
    public var layerLinearParameters: Int { config.layerLinearParameters(biases: biasCounts) }

    /// Bias element counts per layer, for parameter accounting.
    var biasCounts: [Int] {
        (0..<config.numLayers).map { l in
            Projection.allCases.reduce(0) { acc, p in
                acc + (store.shape(TensorNames.bias(l, p))?.first ?? 0)
            }
        }
    }

    /// Every parameter: embedding, layers (norms, weights, biases), final norm, untied head.
    public var totalParameters: Int {
        tensorNames.reduce(0) { $0 + (store.shape($1)?.reduce(1, *) ?? 0) }
    }
}

extension LlamaConfig {
    /// Linear weights of the decoder layers (embedding and head excluded), plus the given biases.
    public func layerLinearParameters(biases: [Int] = []) -> Int {
        var total = 0
        for l in 0..<numLayers {
            let attn = hiddenSize * (headDim * (headCounts[l] + kvHeadCounts[l])
                + valueRows(layer: l) + attentionOutputWidth(layer: l))
            total += attn + 3 * hiddenSize * ffnWidths[l]
            if l < biases.count { total += biases[l] }
        }
        return total
    }
}

extension Model {
    /// The model's tokenizer (from the tokenizer.json it carries); a model without one is bad data
    /// for every use that needs text, named by `purpose` in the message.
    public func tokenizer(for purpose: String = "") throws -> Tokenizer {
        guard let json = tokenizerJSON else {
            throw TensorIOError.badData("\(path): the model has no tokenizer\(purpose.isEmpty ? "" : " " + purpose)")
        }
        do { return try Tokenizer(json: Data(json.utf8)) } catch let e as TokenizerError {
            throw TensorIOError.badData("\(path): the tokenizer: \(e.message)")
        }
    }
}

