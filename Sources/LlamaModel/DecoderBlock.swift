import Kernels

// Dimension legend: R rows (the tokens of several windows stacked), T tokens of one window,
// C hidden, H/Hkv heads/KV heads, D head size, F MLP width.

/// Inputs of a block's linear layers, shown to an observer (calibration statistics) while they
/// are alive. `rows` counts the R rows of every buffer.
public enum BlockTap {
    /// input: [R, C] after input_layernorm (the q/k/v input); heads: [R, H·D] (the o_proj input;
    /// narrower when value heads are, see `LlamaConfig.attentionOutputWidth`).
    case attention(input: UnsafePointer<Float>, heads: UnsafePointer<Float>, rows: Int)
    /// input: [R, C] after post_attention_layernorm (gate/up input); hidden: [R, F] silu(gate)·up
    /// (the down_proj input).
    case mlp(input: UnsafePointer<Float>, hidden: UnsafePointer<Float>, rows: Int)
}

/// Buffers for one layer over R rows, grown as needed (widths differ per layer). Owned
/// allocations rather than arrays, so that the kernels get stable pointers.
///
/// Inference reuses them: the second norm writes over the first, the SwiGLU product over the gate,
/// and the block's input is gone once the residuals are added. A `recording` scratch keeps what
/// the backward (`blockBackward`) needs instead: per row the block's input and its value after the
/// attention residual, q and k after rotary, v, the heads' output, gate and up, the norms' 1/rms and
/// attention's log-sum-exp — C·2 + H·D + Hkv·D + VW + OW + 2F floats and H + 2 statistics (SmolLM2:
/// 5,771 floats, 23 KB per token and layer). The norms' outputs and the SwiGLU product, cheap to
/// compute again, go to `transient` buffers that every recording layer shares.
final class BlockScratch {
    let recording: Bool
    let normed: Buffer  // [R, C] input_layernorm's output
    private(set) var q = Buffer()  // [R, H·D] after rotary
    private(set) var k = Buffer()  // [R, Hkv·D] after rotary
    private(set) var v = Buffer()  // [R, VW], VW = Σ value widths (Hkv·D unless narrowed)
    private(set) var heads = Buffer()  // [R, OW], OW = (H/Hkv)·VW
    private(set) var gate = Buffer()  // [R, F] before the activation
    private(set) var up = Buffer()  // [R, F]
    /// post_attention_layernorm's output [R, C] and silu(gate)·up [R, F]: the same buffers as
    /// `normed` and `gate` unless recording.
    let normed2: Buffer
    private let ownHidden: Buffer?
    // Recording only:
    private(set) var input = Buffer()  // [R, C] the block's input
    private(set) var middle = Buffer()  // [R, C] after the attention residual
    private(set) var rstd1 = Buffer()  // [R] the norms' 1/rms
    private(set) var rstd2 = Buffer()  // [R]
    private(set) var lse = Buffer()  // [R, H] attention's log-sum-exp per row and head
    /// LoRA (`LoRAAdapters`): each projection's u = drop(x)·Aᵀ [R, r] — kept for the backward
    /// when recording — in `Projection.allCases` order, and a buffer for drop(x) (transient).
    private(set) lazy var adapterRows: [Buffer] = Projection.allCases.map { _ in Buffer() }
    let adapterInput: Buffer

    init() {
        recording = false
        normed = Buffer()
        normed2 = normed
        ownHidden = nil
        adapterInput = Buffer()
    }

    init(recording transient: TransientBuffers) {
        recording = true
        normed = transient.normed
        normed2 = transient.normed2
        ownHidden = transient.hidden
        adapterInput = transient.adapterInput
    }

    var hidden: Buffer { ownHidden ?? gate }

    func reserve(rows R: Int, C: Int, H: Int, Hkv: Int, D: Int, VW: Int, OW: Int, F: Int) {
        normed.reserve(R * C)
        q.reserve(R * H * D)
        k.reserve(R * Hkv * D)
        v.reserve(R * VW)
        heads.reserve(R * OW)
        gate.reserve(R * F)
        up.reserve(R * F)
        if recording {
            normed2.reserve(R * C)
            ownHidden!.reserve(R * F)
            input.reserve(R * C)
            middle.reserve(R * C)
            rstd1.reserve(R)
            rstd2.reserve(R)
            lse.reserve(R * H)
        }
    }
}

/// The buffers recording layers share for what their backward computes again.
final class TransientBuffers {
    let normed = Buffer(), normed2 = Buffer(), hidden = Buffer(), adapterInput = Buffer()
}

/// A growable float buffer with a stable base address between `reserve` calls.
public final class Buffer {
    public private(set) var pointer: UnsafeMutablePointer<Float>
    public private(set) var capacity: Int

    public init(count: Int = 0) {
        capacity = max(count, 1)
        pointer = .allocate(capacity: capacity)
        pointer.initialize(repeating: 0, count: capacity)
    }

    public func reserve(_ count: Int) {
        guard count > capacity else { return }
        pointer.deallocate()
        capacity = count
        pointer = .allocate(capacity: count)
        pointer.initialize(repeating: 0, count: count)
    }

    deinit { pointer.deallocate() }
}

/// y[R, out] (+)= x[R, in] · Wᵀ + b. A layer whose input width is zero (every head or channel
/// pruned) contributes only its bias.
func applyLinear(_ layer: Linear, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                 rows R: Int, accumulate: Bool) {
    let out = layer.outFeatures, inF = layer.inFeatures
    if out == 0 || R == 0 { return }
    if inF == 0 {
        if !accumulate { y.update(repeating: 0, count: R * out) }
    } else {
        layer.weight.withUnsafeBufferPointer { w in
            BLAS.linear(x: x, w: w.baseAddress!, y: y, T: R, C: inF, F: out,
                        accumulate: accumulate)
        }
    }
    if let b = layer.bias {
        b.withUnsafeBufferPointer { addBias(y, bias: $0.baseAddress!, T: R, F: out) }
    }
}

/// Linear maps of the same input x[R, in] into their own outputs. One row (decoding) runs them in
/// one parallel region (`BLAS.linearsOneRow`); otherwise each is its own product.
func applyLinears(_ maps: [(Linear, UnsafeMutablePointer<Float>)], x: UnsafePointer<Float>, rows R: Int) {
    guard R == 1, maps.allSatisfy({ $0.0.inFeatures > 0 && $0.0.inFeatures == maps[0].0.inFeatures }) else {
        for (layer, y) in maps { applyLinear(layer, x: x, y: y, rows: R, accumulate: false) }
        return
    }
    withWeights(maps.map { $0.0.weight }) { pointers in
        BLAS.linearsOneRow(x: x, K: maps[0].0.inFeatures,
                           zip(pointers, maps).map { RowMap(w: $0, y: $1.1, N: $1.0.outFeatures) })
    }
    for (layer, y) in maps {
        if let b = layer.bias { b.withUnsafeBufferPointer { addBias(y, bias: $0.baseAddress!, T: R, F: layer.outFeatures) } }
    }
}

/// The base addresses of several arrays at once.
private func withWeights<R>(_ arrays: [[Float]], _ body: ([UnsafePointer<Float>]) -> R) -> R {
    func nest(_ i: Int, _ done: [UnsafePointer<Float>]) -> R {
        if i == arrays.count { return body(done) }
        return arrays[i].withUnsafeBufferPointer { nest(i + 1, done + [$0.baseAddress!]) }
    }
    return nest(0, [])
}

/// How the R rows of a batch form sequences.
public enum RowLayout {
    /// Whole windows of T tokens: positions restart at 0 in every window; attention never
    /// crosses windows.
    case windows(length: Int)
    /// Groups of a context followed by its continuations (`PackedGroup`): each continuation
    /// continues the context's positions and sees the context and itself, never another one.
    case packed([PackedGroup])
    /// One sequence continued from position `start`: the rows' keys and values are written into
    /// the layer's cache (keys [positions, Hkv, D], values [positions, Σw]) after those of
    /// positions 0..<start, and attention reads the cache.
    case cached(start: Int, keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>)
}

/// Which part of a decoder block `runBlock` runs (sequential calibration splits the block; every
/// other caller runs it whole).
public enum BlockPart: Sendable {
    case whole
    /// Everything but down_proj: x ends as the post-attention residual h = x + o_proj(…), the MLP's
    /// taps are seen, its output is not added.
    case untilDown
    /// The MLP half on x = h: x += down_proj(silu(gate(n₂(x))) · up(n₂(x))).
    case mlp
}

/// Runs one decoder block in place on x: [R, C] as transformers' LlamaDecoderLayer does:
///   x += o_proj(attention(rope(q(n₁(x))), rope(k(n₁(x))), v(n₁(x))))
///   x += down_proj(silu(gate(n₂(x))) · up(n₂(x)))
/// with the rows' positions and what attention sees given by `layout`. A `recording` scratch keeps
/// what the backward needs (whole windows only). `adapters` add their low-rank products to the
/// projections' outputs (before rotary for q and k).
func runBlock(_ w: LayerWeights, x: UnsafeMutablePointer<Float>, rows R: Int, layout: RowLayout,
              config c: LlamaConfig, layer l: Int, rotary: RotaryTable, scratch s: BlockScratch,
              adapters: LoRAAdapters? = nil, part: BlockPart = .whole,
              observe: ((BlockTap) throws -> Void)? = nil) rethrows {
    let C = c.hiddenSize, D = c.headDim
    let H = c.headCounts[l], Hkv = c.kvHeadCounts[l], F = c.ffnWidths[l]
    let VW = c.valueRows(layer: l), OW = c.attentionOutputWidth(layer: l)
    let eps = Float(c.rmsNormEps)
    s.reserve(rows: R, C: C, H: H, Hkv: Hkv, D: D, VW: VW, OW: OW, F: F)
    let normed = s.normed.pointer, q = s.q.pointer, k = s.k.pointer, v = s.v.pointer
    let heads = s.heads.pointer, gate = s.gate.pointer, up = s.up.pointer
    let normed2 = s.normed2.pointer, hidden = s.hidden.pointer
    let record = s.recording
    precondition(!record || part == .whole, "recording runs whole blocks")
    if record { s.input.pointer.update(from: x, count: R * C) }
    func adapt(_ p: Projection, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        adapters?.forward(layer: l, p, x: x, y: y, rows: R, u: s.adapterRows[p.index], scratch: s.adapterInput)
    }

    if part != .mlp {  // the attention half
        w.inputNorm.withUnsafeBufferPointer {
            rmsNorm(x: x, weight: $0.baseAddress!, eps: eps, out: normed, T: R, C: C, rstd: record ? s.rstd1.pointer : nil)
        }
        if H > 0 {
            applyLinears([(w.q, q), (w.k, k), (w.v, v)], x: normed, rows: R)
            adapt(.q, x: normed, y: q)
            adapt(.k, x: normed, y: k)
            adapt(.v, x: normed, y: v)
            switch layout {
            case .windows(let T):
                precondition(T > 0 && R % T == 0, "rows must be whole windows")
                for start in stride(from: 0, to: R, by: T) {
                    let qw = q + start * H * D, kw = k + start * Hkv * D, vw = v + start * VW
                    rotary.apply(qw, T: T, H: H)
                    rotary.apply(kw, T: T, H: Hkv)
                    causalAttention(q: qw, k: kw, v: vw, out: heads + start * OW,
                                    T: T, H: H, Hkv: Hkv, D: D, valueWidths: c.valueWidths?[l],
                                    logSumExp: record ? s.lse.pointer + start * H : nil)
                }
            case .packed(let groups):
                precondition(!record, "recording runs whole windows")
                for group in groups {
                    var row = group.start
                    for (length, position) in [(group.contextLength, 0)] + group.continuationLengths.map({ ($0, group.contextLength) }) {
                        rotary.apply(q + row * H * D, T: length, H: H, start: position)
                        rotary.apply(k + row * Hkv * D, T: length, H: Hkv, start: position)
                        row += length
                    }
                }
                precondition(groups.last.map { $0.start + $0.rowCount } ?? 0 <= R, "packed groups exceed the rows")
                packedAttention(q: q, k: k, v: v, out: heads, groups: groups, H: H, Hkv: Hkv, D: D,
                                valueWidths: c.valueWidths?[l])
            case .cached(let P, let keys, let values):
                precondition(!record, "recording runs whole windows")
                rotary.apply(q, T: R, H: H, start: P)
                rotary.apply(k, T: R, H: Hkv, start: P)
                (keys + P * Hkv * D).update(from: k, count: R * Hkv * D)
                (values + P * VW).update(from: v, count: R * VW)
                if P == 0 {
                    causalAttention(q: q, k: k, v: v, out: heads, T: R, H: H, Hkv: Hkv, D: D, valueWidths: c.valueWidths?[l])
                } else {
                    cachedAttention(q: q, keys: keys, values: values, out: heads, start: P, rows: R, H: H, Hkv: Hkv, D: D,
                                    valueWidths: c.valueWidths?[l])
                }
            }
        }
        try observe?(.attention(input: normed, heads: heads, rows: R))
        applyLinear(w.o, x: heads, y: x, rows: R, accumulate: true)
        adapt(.o, x: heads, y: x)
        if record { s.middle.pointer.update(from: x, count: R * C) }
    }

    w.postAttentionNorm.withUnsafeBufferPointer {
        rmsNorm(x: x, weight: $0.baseAddress!, eps: eps, out: normed2, T: R, C: C, rstd: record ? s.rstd2.pointer : nil)
    }
    if F > 0 {
        applyLinears([(w.gate, gate), (w.up, up)], x: normed2, rows: R)
        adapt(.gate, x: normed2, y: gate)
        adapt(.up, x: normed2, y: up)
        swiglu(gate: gate, up: up, out: hidden, count: R * F)
    }
    try observe?(.mlp(input: normed2, hidden: hidden, rows: R))
    guard part != .untilDown else { return }
    applyLinear(w.down, x: hidden, y: x, rows: R, accumulate: true)
    adapt(.down, x: hidden, y: x)
}
