import Kernels

// Dimension legend: N windows of T tokens, R = N·T rows, C hidden, V vocabulary, L layers.

/// The gradient of every parameter of a model, shaped as its weights (the gradient of a tied
/// head is part of the embedding's).
public struct ModelGradients {
    public var embedding: [Float]  // [V, C]
    public var layers: [LayerWeights]
    public var finalNorm: [Float]  // [C]
    public var head: [Float]?  // [V, C], untied heads only

    /// Zeros in the shapes of `model`'s parameters.
    public init(zerosLike model: Model) {
        let c = model.config
        embedding = [Float](repeating: 0, count: c.vocabSize * c.hiddenSize)
        layers = (0..<c.numLayers).map { LayerWeights(zerosLike: model, layer: $0) }
        finalNorm = [Float](repeating: 0, count: c.hiddenSize)
        head = c.tieWordEmbeddings ? nil : embedding
    }

    /// A stand-in for runs that compute no weight gradient (frozen weights).
    static var frozen: ModelGradients { ModelGradients() }

    private init() {
        embedding = []
        layers = []
        finalNorm = []
        head = nil
    }

    /// Sets every gradient to zero, in place.
    public mutating func zero() {
        func clear(_ a: inout [Float]) { a.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        func clear(_ m: inout Linear) {
            clear(&m.weight)
            if m.bias != nil { clear(&m.bias!) }
        }
        clear(&embedding)
        clear(&finalNorm)
        if head != nil { clear(&head!) }
        for l in layers.indices {
            clear(&layers[l].inputNorm)
            clear(&layers[l].postAttentionNorm)
            clear(&layers[l].q); clear(&layers[l].k); clear(&layers[l].v); clear(&layers[l].o)
            clear(&layers[l].gate); clear(&layers[l].up); clear(&layers[l].down)
        }
    }

    /// Every gradient under its parameter's Hugging Face name, in the canonical order (embedding,
    /// each layer's tensors in forward order, final norm, head).
    public var named: [(name: String, values: [Float])] {
        var out: [(String, [Float])] = [(TensorNames.embedding, embedding)]
        for (l, layer) in layers.enumerated() {
            out.append((TensorNames.inputNorm(l), layer.inputNorm))
            for p in Projection.allCases {
                if p == .gate { out.append((TensorNames.postAttentionNorm(l), layer.postAttentionNorm)) }
                let linear = layer.linear(p)
                out.append((TensorNames.weight(l, p), linear.weight))
                if let b = linear.bias { out.append((TensorNames.bias(l, p), b)) }
            }
        }
        out.append((TensorNames.finalNorm, finalNorm))
        if let head { out.append((TensorNames.head, head)) }
        return out
    }
}

extension LayerWeights {
    /// A stand-in for a frozen layer's (untouched) gradients.
    static var frozen: LayerWeights {
        let none = Linear(weight: [], bias: nil, outFeatures: 0, inFeatures: 0)
        return LayerWeights(inputNorm: [], q: none, k: none, v: none, o: none, postAttentionNorm: [], gate: none,
                            up: none, down: none)
    }

    /// Zeros in the shapes of `model`'s layer `l`, from its configuration (and which projections
    /// carry a bias): no weight is read.
    public init(zerosLike model: Model, layer l: Int) {
        let c = model.config
        func zero(_ p: Projection) -> Linear {
            let (rows, cols) = TensorNames.projectionShape(p, config: c, layer: l)
            return Linear(weight: [Float](repeating: 0, count: rows * cols),
                          bias: model.hasBias(l, p) ? [Float](repeating: 0, count: rows) : nil,
                          outFeatures: rows, inFeatures: cols)
        }
        let norm = [Float](repeating: 0, count: c.hiddenSize)
        self.init(inputNorm: norm, q: zero(.q), k: zero(.k), v: zero(.v), o: zero(.o),
                  postAttentionNorm: norm, gate: zero(.gate), up: zero(.up), down: zero(.down))
    }
}

/// What the backward keeps of the forward.
public enum ActivationPolicy: String, Sendable, CaseIterable {
    /// Every layer's recorded activations (`BlockScratch` recording) live until its backward:
    /// per token 5.8k floats a layer for SmolLM2 (23 KB; 0.69 MB over its 30 layers).
    case keep
    /// Only each layer's input is kept (C floats a token and layer: 2.3 KB for SmolLM2, 69 KB
    /// over 30 layers); the backward runs the layer's forward again, recording, just before its
    /// backward — one more forward of every layer, a third more arithmetic.
    case recompute
}

/// The buffers of `lossAndGradients`, kept by the runner between calls: fresh memory costs a page
/// fault and a clearing per 4 KB touched (16% of a backward's time at T = 1024 when every call
/// allocated anew).
final class BackpropWorkspace {
    var inputs: [Buffer] = []  // recompute: each layer's input
    var recorded: [BlockScratch] = []  // keep: each layer's activations
    let transient = TransientBuffers()  // the recording layers' norms and SwiGLU products
    lazy var record = BlockScratch(recording: transient)  // recompute: the one layer being differentiated
    let scratch = BlockScratch()
    let gradients = BlockGradients()
    let normed = Buffer(), rstd = Buffer(), dnormed = Buffer(), logits = Buffer(), dx = Buffer()
}

/// A language-model loss summed over its positions, and how many positions it counts.
public struct LossSum: Sendable, Equatable {
    public var sum: Double
    public var count: Int
    public var mean: Double { sum / Double(max(count, 1)) }

    public init(sum: Double, count: Int) {
        self.sum = sum
        self.count = count
    }
}

extension Runner {
    /// Frees the buffers `lossAndGradients` keeps between calls.
    public func releaseBackpropWorkspace() { backpropWorkspace = nil }

    /// The language-model loss of windows of equal length T — the mean over every window and
    /// position t < T−1 of the cross-entropy of predicting token t+1 of the same window, as
    /// transformers' `labels=input_ids` loss — and its gradient with respect to every parameter,
    /// added to `gradients` (so that batches sum). Returns the loss summed and its count; the
    /// gradients are those of the mean (each position weighted 1/count), or of the sum with each
    /// position weighted `positionWeight` (1/(T−1): the sum over windows of each window's mean).
    ///
    /// Memory: the final norm's output [R, C] and its gradient, logits of 256 rows at a time
    /// ([256, V]; never [R, V]), and the layers' activations as `policy` says — kept by the runner
    /// for its next call (`releaseBackpropWorkspace`).
    /// `targets` as in `lossAndAdapterGradients` (nil: the next token of each window).
    public func lossAndGradients(_ windows: [[Int32]], targets: [[Int32]]? = nil, into gradients: inout ModelGradients,
                                 policy: ActivationPolicy = .recompute, positionWeight: Float? = nil) throws -> LossSum {
        try backpropagate(windows, targets: targets, gradients: &gradients, weightGradients: true, adapters: nil,
                          policy: policy, positionWeight: positionWeight)
    }

    /// The loss of windows and the gradients of every decoder layer's weights, handed to `sink`
    /// layer by layer (last to first) as the backward makes them: one layer's gradients in memory
    /// at a time, where `lossAndGradients` holds the whole model's (a 7B model: 26 GB). The
    /// embedding, the final norm and the head get none. Targets and weights as `lossAndGradients`.
    public func lossAndLayerGradients(_ windows: [[Int32]], targets: [[Int32]]? = nil,
                                      policy: ActivationPolicy = .recompute, positionWeight: Float? = nil,
                                      sink: @escaping (Int, LayerWeights) throws -> Void) throws -> LossSum {
        var none = ModelGradients.frozen
        return try backpropagate(windows, targets: targets, gradients: &none, weightGradients: true, layerSink: sink,
                                 adapters: nil, policy: policy, positionWeight: positionWeight)
    }

    /// The loss of windows under `adapters` (LoRA on frozen weights) and its gradient with respect
    /// to the adapters only, added to `adapters.gradients`: no weight gradient is computed, so
    /// the backward is the input gradients' products alone. `targets[i][t]` is the token position
    /// t of window i must predict, or −1 where nothing counts (an instruction's prompt, padding);
    /// nil: the next token of the same window, as `lossAndGradients`. Weights as there: the mean
    /// over counted positions, or `positionWeight` each.
    public func lossAndAdapterGradients(_ windows: [[Int32]], targets: [[Int32]]? = nil, adapters: LoRAAdapters,
                                        policy: ActivationPolicy = .keep, positionWeight: Float? = nil) throws -> LossSum {
        var none = ModelGradients.frozen
        return try backpropagate(windows, targets: targets, gradients: &none, weightGradients: false,
                                 adapters: adapters, policy: policy, positionWeight: positionWeight)
    }

    /// The loss alone (no backward) of windows under `adapters` (nil: the model itself), with the
    /// same targets as `lossAndAdapterGradients` and no dropout.
    public func loss(_ windows: [[Int32]], targets: [[Int32]]? = nil, adapters: LoRAAdapters?) throws -> LossSum {
        let (T, tokens, targets, count) = try prepare(windows, targets: targets)
        let c = config, V = c.vocabSize, R = tokens.count
        let embedding = try embeddingTable()
        let x = try embed(tokens, embedding: embedding)
        let training = adapters?.training
        adapters?.training = false
        defer { if let training { adapters?.training = training } }
        let scratch = BlockScratch()
        for l in 0..<c.numLayers {
            runBlock(try layerWeights(l), x: x.pointer, rows: R, layout: .windows(length: T), config: c,
                     layer: l, rotary: rotary, scratch: scratch, adapters: adapters)
        }
        var sum = 0.0
        try head(x, rows: R, embedding: embedding) { first, r, logits in
            let chunk = targets[first..<(first + r)].map { max($0, 0) }  // −1: a dummy target, not counted
            let nll = chunk.withUnsafeBufferPointer { crossEntropy(logits: logits, targets: $0.baseAddress!, T: r, V: V) }
            for i in 0..<r where targets[first + i] >= 0 { sum += nll[i] }
        }
        return LossSum(sum: sum, count: count)
    }

    /// The flattened tokens and targets of equal-length windows (−1: not counted), checked.
    private func prepare(_ windows: [[Int32]], targets: [[Int32]]?) throws
        -> (T: Int, tokens: [Int32], targets: [Int32], count: Int) {
        guard let T = windows.first?.count, T > 1 || targets != nil, T > 0 else {
            throw RunnerError("the loss needs windows of at least 2 tokens")
        }
        guard windows.allSatisfy({ $0.count == T }) else { throw RunnerError("windows must have equal length") }
        let tokens = windows.flatMap { $0 }
        var flat = [Int32](repeating: -1, count: tokens.count)
        if let targets {
            guard targets.count == windows.count, targets.allSatisfy({ $0.count == T }) else {
                throw RunnerError("targets must match the windows' shape")
            }
            flat = targets.flatMap { $0 }
            let V = config.vocabSize
            if let bad = flat.first(where: { $0 < -1 || Int($0) >= V }) {
                throw RunnerError("target \(bad) is outside the vocabulary (\(V)) and is not -1")
            }
        } else {
            for i in 0..<tokens.count where i % T != T - 1 { flat[i] = tokens[i + 1] }
        }
        return (T, tokens, flat, flat.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) })
    }

    /// The forward and backward behind `lossAndGradients` (weightGradients: every parameter's
    /// gradient into `gradients`) and `lossAndAdapterGradients` (frozen weights; `gradients` is
    /// not touched).
    private func backpropagate(_ windows: [[Int32]], targets: [[Int32]]?, gradients: inout ModelGradients,
                               weightGradients: Bool, layerSink: ((Int, LayerWeights) throws -> Void)? = nil,
                               adapters: LoRAAdapters?, policy: ActivationPolicy,
                               positionWeight: Float?) throws -> LossSum {
        // Whether `gradients` receives every parameter's gradient (else: none, or the layers' to the sink).
        let modelGradients = weightGradients && layerSink == nil
        let (T, tokens, targets, count) = try prepare(windows, targets: targets)
        let c = config, C = c.hiddenSize, V = c.vocabSize, L = c.numLayers
        let R = tokens.count
        let embedding = try embeddingTable()
        let x = try embed(tokens, embedding: embedding)

        // Forward, keeping each layer's input (recompute) or its recorded activations (keep).
        func weights(_ l: Int) throws -> LayerWeights { try layerWeights(l) }
        let ws = backpropWorkspace ?? BackpropWorkspace()
        backpropWorkspace = ws
        for l in 0..<L {
            let w = try weights(l)
            switch policy {
            case .recompute:
                if ws.inputs.count <= l { ws.inputs.append(Buffer()) }
                ws.inputs[l].reserve(R * C)
                ws.inputs[l].pointer.update(from: x.pointer, count: R * C)
                runBlock(w, x: x.pointer, rows: R, layout: .windows(length: T), config: c, layer: l, rotary: rotary,
                         scratch: ws.scratch, adapters: adapters)
            case .keep:
                if ws.recorded.count <= l { ws.recorded.append(BlockScratch(recording: ws.transient)) }
                runBlock(w, x: x.pointer, rows: R, layout: .windows(length: T), config: c, layer: l, rotary: rotary,
                         scratch: ws.recorded[l], adapters: adapters)
            }
        }

        // Head: n = norm(x); logits = n·Eᵀ; loss = mean cross-entropy — and back to dx.
        let norm = try keptFinalNorm ?? model.finalNorm()
        let headWeights = try outputHead(embedding: embedding)
        let normed = ws.normed, rstd = ws.rstd, dnormed = ws.dnormed
        normed.reserve(R * C)
        rstd.reserve(R)
        dnormed.reserve(R * C)
        dnormed.pointer.update(repeating: 0, count: R * C)
        norm.withUnsafeBufferPointer {
            rmsNorm(x: x.pointer, weight: $0.baseAddress!, eps: Float(c.rmsNormEps), out: normed.pointer, T: R, C: C,
                    rstd: rstd.pointer)
        }
        let chunk = min(256, R)
        let logits = ws.logits
        logits.reserve(chunk * V)
        var lossSum = 0.0
        func headGradient(_ dHead: UnsafeMutablePointer<Float>?) throws {
            for first in stride(from: 0, to: R, by: chunk) {
                let r = min(chunk, R - first), n = normed.pointer + first * C
                try headWeights.logits(n, rows: r, into: logits.pointer)
                lossSum += targets.withUnsafeBufferPointer {
                    crossEntropyBackward(logits: logits.pointer, targets: $0.baseAddress! + first, T: r, V: V,
                                         scale: positionWeight ?? (count > 0 ? 1 / Float(count) : 0))
                }
                try headWeights.backward(dlogits: logits.pointer, normed: n, rows: r, dnormed: dnormed.pointer + first * C,
                                         dHead: dHead)
            }
        }
        if !modelGradients {
            try headGradient(nil)
        } else if gradients.head != nil {
            try gradients.head!.withUnsafeMutableBufferPointer { try headGradient($0.baseAddress!) }
        } else {
            try gradients.embedding.withUnsafeMutableBufferPointer { try headGradient($0.baseAddress!) }
        }
        let dx = ws.dx
        dx.reserve(R * C)
        dx.pointer.update(repeating: 0, count: R * C)
        norm.withUnsafeBufferPointer { weight in
            if modelGradients {
                gradients.finalNorm.withUnsafeMutableBufferPointer { dweight in
                    rmsNormBackward(dout: dnormed.pointer, x: x.pointer, weight: weight.baseAddress!, rstd: rstd.pointer,
                                    dx: dx.pointer, dweight: dweight.baseAddress!, T: R, C: C)
                }
            } else {
                // A frozen norm: its weight gradient goes to the layers' scratch and is dropped.
                ws.gradients.normWeight.reserve(C)
                rmsNormBackward(dout: dnormed.pointer, x: x.pointer, weight: weight.baseAddress!, rstd: rstd.pointer,
                                dx: dx.pointer, dweight: ws.gradients.normWeight.pointer, T: R, C: C)
            }
        }

        // Layers, last to first.
        for l in stride(from: L - 1, through: 0, by: -1) {
            let w = try weights(l)
            let activations: BlockScratch
            if policy == .recompute {
                // The layer's forward again, recording (on its saved input, overwritten).
                runBlock(w, x: ws.inputs[l].pointer, rows: R, layout: .windows(length: T), config: c, layer: l,
                         rotary: rotary, scratch: ws.record, adapters: adapters)
                activations = ws.record
            } else {
                activations = ws.recorded[l]
            }
            if let layerSink, weightGradients {
                var layerGradient = LayerWeights(zerosLike: model, layer: l)
                blockBackward(w, gradient: &layerGradient, adapters: adapters, dx: dx.pointer, rows: R,
                              windowLength: T, config: c, layer: l, rotary: rotary, activations: activations,
                              scratch: ws.gradients)
                try layerSink(l, layerGradient)
            } else if weightGradients {
                blockBackward(w, gradient: &gradients.layers[l], adapters: adapters, dx: dx.pointer, rows: R,
                              windowLength: T, config: c, layer: l, rotary: rotary, activations: activations,
                              scratch: ws.gradients)
            } else {
                var none = LayerWeights.frozen
                blockBackward(w, gradient: &none, weightGradients: false, adapters: adapters, dx: dx.pointer, rows: R,
                              windowLength: T, config: c, layer: l, rotary: rotary, activations: activations,
                              scratch: ws.gradients)
            }
        }
        guard modelGradients else { return LossSum(sum: lossSum, count: count) }

        // x = E[tokens]: each row's gradient goes to its token's row of the embedding.
        gradients.embedding.withUnsafeMutableBufferPointer { de in
            for (i, t) in tokens.enumerated() {
                let row = de.baseAddress! + Int(t) * C, g = dx.pointer + i * C
                for j in 0..<C { row[j] += g[j] }
            }
        }
        return LossSum(sum: lossSum, count: count)
    }
}
