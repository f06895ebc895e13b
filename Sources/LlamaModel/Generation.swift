import Foundation
import Kernels

// Incremental decoding with a key/value cache: a prompt runs once through every layer (its keys
// and values kept per layer, after RoPE), then each new token runs as one row that attends over
// the cache. Works for every model the tools make (per-layer widths, narrowed value heads, biases).
//
// Dimensions: P positions the cache can hold, C hidden, D head size, per layer Hkv KV heads and
// VW = Σ value widths; V vocabulary.
//   keys[l]: [P, Hkv, D]; values[l]: [P, VW]

/// The keys and values of the positions a sequence has run through, per layer.
public final class KVCache {
    public let capacity: Int
    /// Positions filled.
    public private(set) var length = 0
    let keys: [Buffer]
    let values: [Buffer]

    public init(config c: LlamaConfig, capacity: Int) {
        self.capacity = capacity
        keys = (0..<c.numLayers).map { Buffer(count: capacity * c.kvHeadCounts[$0] * c.headDim) }
        values = (0..<c.numLayers).map { Buffer(count: capacity * c.valueRows(layer: $0)) }
    }

    func advance(by n: Int) { length += n }
}

/// How the next token is chosen.
public struct Sampling: Sendable {
    /// 0: greedy (argmax, lowest id among equals).
    public var temperature: Double = 0
    /// Nucleus sampling: the smallest set of most likely tokens whose probability reaches p.
    public var topP: Double = 1
    public var seed: UInt64 = 0

    public init(temperature: Double = 0, topP: Double = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topP = topP
        self.seed = seed
    }
}

extension Runner {
    /// Every layer's weights, read once for a run that passes through the layers many times
    /// (decoding: one pass per token).
    public func loadLayers() throws -> [LayerWeights] {
        try keptLayers ?? (0..<config.numLayers).map { try model.layer($0) }
    }

    /// The bytes of the decoder layers' weights, the final norm and an untied head as F32.
    public var keptBytes: Int {
        var names = (0..<config.numLayers).flatMap { model.layerTensorNames($0) } + [TensorNames.finalNorm]
        if !config.tieWordEmbeddings { names.append(TensorNames.head) }
        return names.reduce(0) { $0 + 4 * (model.shape($1)?.reduce(1, *) ?? 0) }
    }

    /// Keeps every layer's weights, the final norm and the head in memory for the passes that
    /// follow (`windowNLL`, `step` and the rest then read none of them from the model again: an
    /// untied head read per token would be the whole head, dequantised, every token) — when
    /// they fit in `keepLimit`; otherwise every pass reads them. Returns whether it kept them.
    @discardableResult
    public func keepLayers() throws -> Bool {
        guard keptLayers != nil || keptBytes <= keepLimit else { return false }
        keptLayers = try loadLayers()
        keptFinalNorm = try model.finalNorm()
        keptHead = .some(try model.head())
        return true
    }

    /// Layer `l`'s weights: kept, or read from the model.
    func layerWeights(_ l: Int) throws -> LayerWeights { try keptLayers?[l] ?? model.layer(l) }

    /// Runs with `layers` in place of the model's decoder layers (the same shapes: a model
    /// changed in memory, such as adapters merged into it).
    public func keep(layers: [LayerWeights]) throws {
        guard layers.count == config.numLayers else {
            throw RunnerError("\(layers.count) layers given for a model of \(config.numLayers)")
        }
        keptLayers = layers
    }

    /// Runs `tokens` at the cache's next positions through every layer (`layers`: the model's
    /// weights, loaded once; nil: kept by `keepLayers`, or read from the model layer by layer) and
    /// returns the logits of the last one, [V].
    public func step(_ tokens: [Int32], cache: KVCache, layers: [LayerWeights]? = nil, embedding: [Float]?) throws -> [Float] {
        let P = cache.length, n = tokens.count
        guard n > 0 else { throw RunnerError("nothing to run") }
        guard P + n <= min(cache.capacity, rotary.maxPositions) else {
            throw RunnerError("\(P + n) positions exceed the \(min(cache.capacity, rotary.maxPositions)) this run holds")
        }
        let x = try embed(tokens, embedding: embedding)
        let scratch = BlockScratch()
        for l in 0..<config.numLayers {
            runBlock(try layers?[l] ?? layerWeights(l), x: x.pointer, rows: n, layout: .cached(start: P, keys: cache.keys[l].pointer, values: cache.values[l].pointer),
                     config: config, layer: l, rotary: rotary, scratch: scratch)
        }
        cache.advance(by: n)
        let C = config.hiddenSize, V = config.vocabSize
        let last = Buffer(count: C)
        last.pointer.update(from: x.pointer + (n - 1) * C, count: C)
        var logits = [Float](repeating: 0, count: V)
        try head(last, rows: 1, embedding: embedding) { _, _, row in
            logits.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: row, count: V) }
        }
        return logits
    }

    /// The prompt, then `count` new tokens chosen by `sampling` (stopping early at `stop` when
    /// given); `onToken` sees each as it comes.
    public func generate(prompt: [Int32], count: Int, sampling: Sampling = Sampling(), stop: Int32? = nil,
                         onToken: ((Int32) -> Void)? = nil) throws -> [Int32] {
        guard !prompt.isEmpty else { throw RunnerError("the prompt has no tokens") }
        let needed = prompt.count + max(count - 1, 0)
        guard needed <= rotary.maxPositions else {
            throw RunnerError("the prompt (\(prompt.count) tokens) and \(count) new tokens exceed the \(rotary.maxPositions) positions the model holds")
        }
        try keepLayers()
        let embedding = try embeddingTable()
        let cache = KVCache(config: config, capacity: needed)
        var rng = SplitMix64(seed: sampling.seed)
        var out: [Int32] = []
        var logits = try step(prompt, cache: cache, embedding: embedding)
        while out.count < count {
            let next = choose(logits, sampling, &rng)
            out.append(next)
            onToken?(next)
            if next == stop || out.count == count { break }
            logits = try step([next], cache: cache, embedding: embedding)
        }
        return out
    }
}

/// The next token from logits [V]: argmax when the temperature is 0, else a draw from
/// softmax(logits / temperature) restricted to the top-p nucleus.
func choose(_ logits: [Float], _ s: Sampling, _ rng: inout SplitMix64) -> Int32 {
    guard s.temperature > 0 else { return Int32(logits.withUnsafeBufferPointer { argmax($0.baseAddress!, count: $0.count) }) }
    let scaled = logits.map { Double($0) / s.temperature }
    let m = scaled.max() ?? 0
    var p = scaled.map { Foundation.exp($0 - m) }
    let total = p.reduce(0, +)
    p = p.map { $0 / total }
    let order = p.indices.sorted { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }
    var kept: [Int] = [], mass = 0.0
    for i in order {
        kept.append(i)
        mass += p[i]
        if mass >= s.topP { break }
    }
    var u = rng.nextUnit() * mass
    for i in kept {
        u -= p[i]
        if u <= 0 { return Int32(i) }
    }
    return Int32(kept.last!)
}

