import Foundation
import Kernels
import TensorIO

// Dimension legend: N windows, T tokens per window, R rows of one batch (whole windows),
// C hidden, V vocabulary.

/// Runs a model over windows of tokens layer by layer: the hidden states of every window stay in
/// memory ([N·T, C]) while each decoder layer's weights are read once, so that memory is about
/// one layer plus the activations, and a model on a pipe is read in a single pass.
public final class Runner {
    public let model: Model
    public let config: LlamaConfig
    /// Rows per batch of the position-wise products (whole windows); larger batches keep sgemm
    /// efficient when windows are short.
    public var batchRows = 4096
    let rotary: RotaryTable
    /// The decoder layers' weights, the final norm and an untied head when kept in memory
    /// (`keepLayers`) for runs that pass through the model many times; nil: every pass reads them
    /// from the model.
    public internal(set) var keptLayers: [LayerWeights]?
    var keptFinalNorm: [Float]?
    var keptHead: [Float]??
    /// The most memory `keepLayers` spends on weights kept as F32 (default 2 GiB: a model of up to
    /// about 500M parameters). A larger model's layers are read again from its file on every pass
    /// instead — the page cache holds the file, the process one layer — so that a 7B model's tools
    /// stay within a few GB (docs/DESIGN.md "Memory at scale").
    public var keepLimit = 2 << 30
    /// An untied head beyond this many elements, of a model that reads rows alone, is read a
    /// block of vocabulary rows at a time for each use (`OutputHead`) rather than held whole as
    /// F32 (default 64M: LLaMA-2-7B's 32000 × 4096 and larger; a 128k vocabulary's is 2.1 GB).
    public var headBlockLimit = 1 << 26
    /// What `lossAndGradients` keeps between calls.
    var backpropWorkspace: BackpropWorkspace?

    public init(model: Model, maxPositions: Int) {
        self.model = model
        self.config = model.config
        rotary = RotaryTable(headDim: model.config.headDim, theta: model.config.ropeTheta,
                             scaling: model.config.ropeScaling, maxPositions: max(maxPositions, 1))
    }

    /// The embedding table for a run, whole where it must be: the head is tied to it, or the
    /// model is a stream that is read once. nil: `embed` reads only the rows each batch needs and
    /// the table is never widened whole (a 128k vocabulary's is 2 GB as F32).
    public func embeddingTable() throws -> [Float]? {
        config.tieWordEmbeddings || !model.readsRowsAlone ? try model.embedding() : nil
    }

    /// The hidden states after the embedding: x[N·T, C], from `embedding` (`embeddingTable()`),
    /// or when nil from the tokens' rows of the model's embedding.
    public func embed(_ tokens: [Int32], embedding: [Float]?) throws -> Buffer {
        let C = config.hiddenSize, V = config.vocabSize
        for (i, t) in tokens.enumerated() where t < 0 || Int(t) >= V {
            throw RunnerError("token id \(t) at position \(i) is outside the vocabulary (\(V))")
        }
        let x = Buffer(count: tokens.count * C)
        guard let embedding else {
            try model.embeddingRows(tokens.map { Int($0) }).withUnsafeBufferPointer {
                x.pointer.update(from: $0.baseAddress!, count: tokens.count * C)
            }
            return x
        }
        embedding.withUnsafeBufferPointer { e in
            for (i, t) in tokens.enumerated() {
                (x.pointer + i * C).update(from: e.baseAddress! + Int(t) * C, count: C)
            }
        }
        return x
    }

    /// Runs every decoder layer over x[N·T, C] in place. `observe(layer, tap)` sees the inputs
    /// of each layer's linear maps; `layerDone(l)` is called after each layer.
    func runLayers(_ x: Buffer, rows: Int, windowLength T: Int,
                   observe: ((Int, BlockTap) throws -> Void)? = nil,
                   layerDone: ((Int) throws -> Void)? = nil) throws {
        try runLayers(x, rows: rows, windowLength: T, layers: 0..<config.numLayers,
                      events: observe.map { f in
                          { l, event in if case .tap(let tap, _) = event { try f(l, tap) } }
                      },
                      layerDone: layerDone)
    }

    /// Runs decoder layers `layers` over x[N·T, C] in place, in batches of whole windows.
    /// `events(layer, event)` sees, for every batch, its rows before the block, the inputs of
    /// the block's linear maps, and its rows after the block; `layerDone(l)` is called after
    /// each layer (x then holds layer l's output).
    public func runLayers(_ x: Buffer, rows: Int, windowLength T: Int, layers: Range<Int>,
                          events: ((Int, LayerEvent) throws -> Void)?,
                          layerDone: ((Int) throws -> Void)? = nil) throws {
        let scratch = BlockScratch()
        for l in layers {
            try runLayer(try layerWeights(l), config: config, layer: l, x: x, rows: rows, windowLength: T,
                         scratch: scratch, events: events.map { f in { try f(l, $0) } })
            try layerDone?(l)
        }
    }

    /// Runs decoder block `w` — layer l of configuration `c`, whose widths may differ from the
    /// model's (a layer just pruned) — over x[rows, C] in batches of whole windows, in place; with
    /// `inPlace` false each batch runs on a copy and x is left as it was (a pass whose outputs
    /// only the observer sees). `events` as in `runLayers`.
    ///
    /// `part` splits the block (sequential calibration): `.untilDown` stops before down_proj (no
    /// `blockOutput` event: the rows are not the block's output) and stores each batch's
    /// post-attention residual h into `residual` [rows, C] when given; `.mlp` runs the MLP half from
    /// those h (in place: x's rows are shown as `blockInput`, then replaced by h and the MLP added).
    /// The residual may live in a temporary file (`ScratchFloats`): it is as large as x.
    public func runLayer(_ w: LayerWeights, config c: LlamaConfig, layer l: Int, x: Buffer, rows: Int, windowLength T: Int,
                         inPlace: Bool = true, part: BlockPart = .whole, residual: ScratchFloats? = nil,
                         events: ((LayerEvent) throws -> Void)?) throws {
        try runLayer(w, config: c, layer: l, x: x, rows: rows, windowLength: T, inPlace: inPlace, part: part, residual: residual,
                     scratch: BlockScratch(), events: events)
    }

    func runLayer(_ w: LayerWeights, config c: LlamaConfig, layer l: Int, x: Buffer, rows: Int, windowLength T: Int,
                  inPlace: Bool = true, part: BlockPart = .whole, residual: ScratchFloats? = nil, scratch: BlockScratch,
                  events: ((LayerEvent) throws -> Void)?) throws {
        precondition(part != .mlp || (residual != nil && inPlace), "the MLP half runs in place from the stored residual")
        let batch = max(T, batchRows / T * T)
        let C = c.hiddenSize
        let copy = inPlace ? nil : Buffer(count: min(batch, rows) * C)
        for start in stride(from: 0, to: rows, by: batch) {
            let R = min(batch, rows - start)
            var rowsPointer = x.pointer + start * C
            if let copy {
                copy.pointer.update(from: rowsPointer, count: R * C)
                rowsPointer = copy.pointer
            }
            try events?(.blockInput(rows: rowsPointer, first: start, count: R))
            if part == .mlp, let residual {
                residual.withSlice(start * C..<(start + R) * C) { rowsPointer.update(from: $0.baseAddress!, count: R * C) }
            }
            try runBlock(w, x: rowsPointer, rows: R, layout: .windows(length: T), config: c, layer: l,
                         rotary: rotary, scratch: scratch, part: part, observe: events.map { f in { try f(.tap($0, first: start)) } })
            if part == .untilDown {
                residual?.withSlice(start * C..<(start + R) * C) { $0.baseAddress!.update(from: rowsPointer, count: R * C) }
            } else {
                try events?(.blockOutput(rows: rowsPointer, first: start, count: R))
            }
        }
    }

    /// Final norm and head over x[N·T, C], `rowsPerChunk` rows at a time, handing each chunk's
    /// logits [r, V] (rows first..<first+r) to `body`.
    func head(_ x: Buffer, rows: Int, embedding: [Float]?, rowsPerChunk: Int = 256,
              _ body: (Int, Int, UnsafePointer<Float>) throws -> Void) throws {
        let C = config.hiddenSize, V = config.vocabSize
        let norm = try keptFinalNorm ?? model.finalNorm()
        let weights = try outputHead(embedding: embedding)
        let chunk = max(1, min(rowsPerChunk, rows))  // one row when decoding: not 256 rows of logits
        let normed = Buffer(count: chunk * C)
        let logits = Buffer(count: chunk * V)
        try norm.withUnsafeBufferPointer { g in
            for first in stride(from: 0, to: rows, by: chunk) {
                let r = min(chunk, rows - first)
                rmsNorm(x: x.pointer + first * C, weight: g.baseAddress!,
                        eps: Float(config.rmsNormEps), out: normed.pointer, T: r, C: C)
                try weights.logits(normed.pointer, rows: r, into: logits.pointer)
                try body(first, r, logits.pointer)
            }
        }
    }

    /// The output head for a pass: the table it is tied to (`embedding`, from `embeddingTable`),
    /// the kept head, the untied head whole, or — beyond `headBlockLimit` elements, when the model
    /// reads rows alone — a block of vocabulary rows at a time.
    func outputHead(embedding: [Float]?) throws -> OutputHead {
        let C = config.hiddenSize, V = config.vocabSize
        if config.tieWordEmbeddings {
            guard let embedding else { throw RunnerError("a tied head needs the whole embedding table") }
            return OutputHead(whole: embedding, V: V, C: C)
        }
        if let kept = keptHead, let head = kept { return OutputHead(whole: head, V: V, C: C) }
        if model.readsRowsAlone && V * C > headBlockLimit {
            return OutputHead(model: model, V: V, C: C, blockRows: max(1, headBlockLimit / 16 / max(C, 1)))
        }
        guard let head = try model.head() else { throw RunnerError("the model has no output head") }
        return OutputHead(whole: head, V: V, C: C)
    }

    /// Logits [T, V] of one window (for tests and small checks).
    public func logits(_ tokens: [Int32]) throws -> [Float] {
        let T = tokens.count, V = config.vocabSize
        let embedding = try embeddingTable()
        let x = try embed(tokens, embedding: embedding)
        try runLayers(x, rows: T, windowLength: T)
        var out = [Float](repeating: 0, count: T * V)
        try head(x, rows: T, embedding: embedding) { first, r, logits in
            out.withUnsafeMutableBufferPointer {
                ($0.baseAddress! + first * V).update(from: logits, count: r * V)
            }
        }
        return out
    }

    /// Negative log-likelihood of each window's tokens 1..<T given the ones before (the
    /// language-modelling loss), summed per window in float64: [N]. Windows are all of length T.
    public func windowNLL(_ windows: [[Int32]], progress: ((String, Int, Int) -> Void)? = nil)
        throws -> [Double]
    {
        guard let T = windows.first?.count, T > 0 else { return [] }
        let N = windows.count, V = config.vocabSize
        let tokens = windows.flatMap { $0 }
        precondition(tokens.count == N * T, "windows must have equal length")
        let embedding = try embeddingTable()
        let x = try embed(tokens, embedding: embedding)
        try runLayers(x, rows: N * T, windowLength: T, layerDone: { l in
            progress?("layers", l + 1, self.config.numLayers)
        })
        var sums = [Double](repeating: 0, count: N)
        try head(x, rows: N * T, embedding: embedding) { first, r, logits in
            // Targets: the next token in the same window; a window's last row predicts nothing.
            // (it gets a dummy target whose loss is not counted).
            var targets = [Int32](repeating: 0, count: r)
            for i in 0..<r where (first + i) % T != T - 1 { targets[i] = tokens[first + i + 1] }
            let nll = targets.withUnsafeBufferPointer {
                crossEntropy(logits: logits, targets: $0.baseAddress!, T: r, V: V)
            }
            for i in 0..<r where (first + i) % T != T - 1 { sums[(first + i) / T] += nll[i] }
            progress?("head", first + r, N * T)
        }
        return sums
    }
}

/// What `Runner.runLayers` shows an observer for each batch of rows of a layer.
public enum LayerEvent {
    /// The batch's hidden states [count, C] (rows first..<first+count of x) before the block.
    case blockInput(rows: UnsafePointer<Float>, first: Int, count: Int)
    /// The inputs of the block's linear maps for the batch starting at row `first`.
    case tap(BlockTap, first: Int)
    /// The batch's hidden states after the block.
    case blockOutput(rows: UnsafePointer<Float>, first: Int, count: Int)
}

public struct RunnerError: DiagnosedError {
    public var message: String
    public var kind: FailureKind { .badData }
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The output head's weights [V, C] for one pass: whole in memory, or read from the model a block
/// of vocabulary rows at a time for each use (a 128k vocabulary's untied head is 2.1 GB as F32; a
/// block is a few MB, and reading it again costs a small part of its product).
struct OutputHead {
    private let whole: [Float]?
    private let model: Model?
    let V: Int, C: Int
    private let blockRows: Int

    init(whole: [Float], V: Int, C: Int) {
        (self.whole, model, self.V, self.C, blockRows) = (whole, nil, V, C, V)
    }

    init(model: Model, V: Int, C: Int, blockRows: Int) {
        (whole, self.model, self.V, self.C, self.blockRows) = (nil, model, V, C, blockRows)
    }

    /// `body(vocabulary rows, their weights [rows.count, C])` for the blocks in order.
    private func forEachBlock(_ body: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
        if let whole {
            try whole.withUnsafeBufferPointer { try body(0..<V, $0.baseAddress!) }
            return
        }
        for first in stride(from: 0, to: V, by: blockRows) {
            let rows = first..<min(V, first + blockRows)
            try model!.store.rows(TensorNames.head, Array(rows)).withUnsafeBufferPointer { try body(rows, $0.baseAddress!) }
        }
    }

    /// logits[r, V] = normed[r, C] · headᵀ.
    func logits(_ normed: UnsafePointer<Float>, rows r: Int, into logits: UnsafeMutablePointer<Float>) throws {
        try forEachBlock { vs, w in
            if vs.count == V {
                BLAS.linear(x: normed, w: w, y: logits, T: r, C: C, F: V)
            } else {
                BLAS.sgemm(transA: false, transB: true, M: r, N: vs.count, K: C, alpha: 1, a: normed, lda: C, b: w, ldb: C,
                           beta: 0, c: logits + vs.lowerBound, ldc: V)
            }
        }
    }

    /// The backward of `logits`, accumulating: dnormed[r, C] += dlogits[r, V] · head;
    /// dHead[V, C] += dlogitsᵀ · normed when given.
    func backward(dlogits: UnsafePointer<Float>, normed: UnsafePointer<Float>, rows r: Int,
                  dnormed: UnsafeMutablePointer<Float>, dHead: UnsafeMutablePointer<Float>?) throws {
        try forEachBlock { vs, w in
            if vs.count == V {
                BLAS.linearBackward(dy: dlogits, x: normed, w: w, dx: dnormed, dw: dHead, T: r, C: C, F: V)
                return
            }
            let dy = dlogits + vs.lowerBound
            BLAS.sgemm(transA: false, transB: false, M: r, N: C, K: vs.count, alpha: 1, a: dy, lda: V, b: w, ldb: C,
                       beta: 1, c: dnormed, ldc: C)
            if let dHead {
                BLAS.sgemm(transA: true, transB: false, M: vs.count, N: C, K: r, alpha: 1, a: dy, lda: V, b: normed, ldb: C,
                           beta: 1, c: dHead + vs.lowerBound * C, ldc: C)
            }
        }
    }
}
