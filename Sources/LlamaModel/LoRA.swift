import Foundation
import Kernels

// Dimension legend: R rows, r an adapter's rank, in/out a projection's input and output widths.

/// Low-rank adapters on a model's linear maps (LoRA, Hu et al. 2021), as PEFT's `LoraLayer` runs
/// them (`lora_dropout`, then `lora_A`, then `lora_B`, times `scaling`):
///
///     y = x·Wᵀ + b + s · (drop(x)·Aᵀ)·Bᵀ        A: [r, in], B: [out, r], s = α / r
///
/// drop(x) zeroes each element of x with probability p and scales the rest by 1/(1−p) (identity
/// when p = 0 or outside training). Every adapter's A and B live in one flat parameter vector
/// (`parameters`, A then B for each adapter in layer and projection order) beside a gradient
/// vector of the same layout, so that an optimizer and a checkpoint see one array.
///
/// Dropout masks are not stored: each element's keep/drop is a hash of (`dropoutKey`, adapter,
/// row, column), so the backward — and a forward run again under the `recompute` policy —
/// draws the same mask from the key alone. The trainer sets a new key for every micro-batch.
public final class LoRAAdapters {
    public struct Adapter: Sendable, Equatable {
        public let layer: Int
        public let projection: Projection
        public let rank: Int
        public let inFeatures: Int
        public let outFeatures: Int
        /// α / r.
        public let scale: Float
        /// Offsets of A ([rank, inFeatures]) and B ([outFeatures, rank]) in `parameters`.
        public let aOffset: Int
        public let bOffset: Int
    }

    public let adapters: [Adapter]
    private let index: [[Int?]]  // [layer][projection]
    /// Floats in `parameters` (and in `gradients`).
    public let count: Int
    public let alpha: Double
    public let dropout: Float
    private let parameterStorage: Buffer, gradientStorage: Buffer
    public var parameters: UnsafeMutablePointer<Float> { parameterStorage.pointer }
    public var gradients: UnsafeMutablePointer<Float> { gradientStorage.pointer }
    /// Selects the dropout masks of the next forward and backward (set per micro-batch).
    public var dropoutKey: UInt64 = 0
    /// Dropout applies only while training: false, and every forward uses x itself.
    public var training = true

    /// Adapters of rank `rank(layer, projection)` (0: none) on the projections of a model with
    /// configuration `config` (per-layer widths and narrowed value heads included); a projection
    /// whose input or output width is 0 gets none. Parameters start at zero: `initialize`.
    public init(config: LlamaConfig, alpha: Double, dropout: Float, rank: (Int, Projection) -> Int) {
        precondition(dropout >= 0 && dropout < 1, "dropout must be in [0, 1)")
        var adapters: [Adapter] = [], index: [[Int?]] = [], offset = 0
        for l in 0..<config.numLayers {
            var row = [Int?](repeating: nil, count: Projection.allCases.count)
            for (i, p) in Projection.allCases.enumerated() {
                let r = rank(l, p)
                let (out, inF) = TensorNames.projectionShape(p, config: config, layer: l)
                guard r > 0, out > 0, inF > 0 else { continue }
                row[i] = adapters.count
                adapters.append(Adapter(layer: l, projection: p, rank: r, inFeatures: inF, outFeatures: out,
                                        scale: Float(alpha / Double(r)), aOffset: offset, bOffset: offset + r * inF))
                offset += r * inF + out * r
            }
            index.append(row)
        }
        self.adapters = adapters
        self.index = index
        self.alpha = alpha
        self.dropout = dropout
        count = offset
        parameterStorage = Buffer(count: offset)
        gradientStorage = Buffer(count: offset)
    }

    public func adapter(layer l: Int, _ p: Projection) -> Adapter? {
        guard l < index.count, let i = index[l][p.index] else { return nil }
        return adapters[i]
    }

    /// PEFT's initialisation: A from `kaiming_uniform_(a=√5)`, i.e. uniform in ±1/√in; B zero.
    /// `seed` fixes the draw (our generator, not torch's: the same distribution, other values).
    public func initialize(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        parameters.update(repeating: 0, count: count)
        for a in adapters {
            let bound = 1 / Float(a.inFeatures).squareRoot()
            for i in 0..<(a.rank * a.inFeatures) {
                parameters[a.aOffset + i] = (2 * rng.nextUnitFloat() - 1) * bound
            }
        }
    }

    public func zeroGradients() { gradients.update(repeating: 0, count: count) }

    /// PEFT's key of each tensor in `adapter_model.safetensors`, its shape and offset.
    public var named: [(name: String, shape: [Int], offset: Int)] {
        adapters.flatMap { a -> [(String, [Int], Int)] in
            let base = "base_model.model.model.layers.\(a.layer).\(a.projection.rawValue)"
            return [("\(base).lora_A.weight", [a.rank, a.inFeatures], a.aOffset),
                    ("\(base).lora_B.weight", [a.outFeatures, a.rank], a.bOffset)]
        }
    }

    /// W += s·B·A for every adapter of layer l: the layer as the adapted model computes it.
    public func merge(into w: inout LayerWeights, layer l: Int) {
        for p in Projection.allCases {
            guard let a = adapter(layer: l, p) else { continue }
            var linear = w.linear(p)
            precondition(linear.outFeatures == a.outFeatures && linear.inFeatures == a.inFeatures,
                         "adapter shape differs from layer \(l)'s \(p.shortName)")
            linear.weight.withUnsafeMutableBufferPointer { wp in
                BLAS.sgemm(transA: false, transB: false, M: a.outFeatures, N: a.inFeatures, K: a.rank, alpha: a.scale,
                           a: parameters + a.bOffset, lda: a.rank, b: parameters + a.aOffset, ldb: a.inFeatures,
                           beta: 1, c: wp.baseAddress!, ldc: a.inFeatures)
            }
            w.setLinear(p, linear)
        }
    }

    // MARK: Forward and backward of one adapted projection

    /// The dropout of adapter `i` applied to x[R, in] into `out` (x itself when not dropping).
    private func dropped(_ i: Int, x: UnsafePointer<Float>, rows R: Int, inFeatures inF: Int,
                         into out: Buffer) -> UnsafePointer<Float> {
        guard training && dropout > 0 else { return x }
        out.reserve(R * inF)
        let keep = 1 / (1 - dropout), o = out.pointer
        let key = dropoutKey, threshold = dropoutThreshold
        LoRAAdapters.inRowBlocks(R, width: inF) { elements in
            for e in elements { o[e] = dropMask(key, adapter: i, element: e) >= threshold ? x[e] * keep : 0 }
        }
        return UnsafePointer(o)
    }

    /// The elements of R rows of `width`, in blocks of whole rows on the workers (each element's
    /// result depends on it alone, so not on the thread that computes it).
    static func inRowBlocks(_ R: Int, width: Int, _ body: (Range<Int>) -> Void) {
        let blocks = min(R, 16)
        BLAS.parallelBlocks(blocks) { b in
            body((R * b / blocks * width)..<(R * (b + 1) / blocks * width))
        }
    }

    /// An element is kept when its 24-bit hash is at least p·2²⁴.
    private var dropoutThreshold: UInt32 { UInt32((Double(dropout) * 16_777_216).rounded()) }

    /// y[R, out] += s·(drop(x)·Aᵀ)·Bᵀ, keeping u = drop(x)·Aᵀ [R, r] in `u` for the backward.
    func forward(layer l: Int, _ p: Projection, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows R: Int,
                 u: Buffer, scratch: Buffer) {
        guard R > 0, let a = adapter(layer: l, p) else { return }
        let i = index[l][p.index]!
        let xd = dropped(i, x: x, rows: R, inFeatures: a.inFeatures, into: scratch)
        u.reserve(R * a.rank)
        BLAS.sgemm(transA: false, transB: true, M: R, N: a.rank, K: a.inFeatures, alpha: 1, a: xd, lda: a.inFeatures,
                   b: parameters + a.aOffset, ldb: a.inFeatures, beta: 0, c: u.pointer, ldc: a.rank)
        BLAS.sgemm(transA: false, transB: true, M: R, N: a.outFeatures, K: a.rank, alpha: a.scale, a: u.pointer,
                   lda: a.rank, b: parameters + a.bOffset, ldb: a.rank, beta: 1, c: y, ldc: a.outFeatures)
    }

    /// The backward of `forward`, accumulating: given dy [R, out] and the kept u [R, r],
    ///   dB += s·dyᵀ·u;   du = s·dy·B;   dA += duᵀ·drop(x);   dx += drop'(du·A)
    /// (drop' scales the kept elements by 1/(1−p) and zeroes the dropped ones). dx nil: not wanted.
    func backward(layer l: Int, _ p: Projection, x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                  dx: UnsafeMutablePointer<Float>?, rows R: Int, u: Buffer, du: Buffer, scratch: Buffer) {
        guard R > 0, let a = adapter(layer: l, p) else { return }
        let i = index[l][p.index]!
        let r = a.rank, inF = a.inFeatures, out = a.outFeatures
        BLAS.sgemm(transA: true, transB: false, M: out, N: r, K: R, alpha: a.scale, a: dy, lda: out, b: u.pointer,
                   ldb: r, beta: 1, c: gradients + a.bOffset, ldc: r)
        du.reserve(R * r)
        BLAS.sgemm(transA: false, transB: false, M: R, N: r, K: out, alpha: a.scale, a: dy, lda: out,
                   b: parameters + a.bOffset, ldb: r, beta: 0, c: du.pointer, ldc: r)
        let xd = dropped(i, x: x, rows: R, inFeatures: inF, into: scratch)
        BLAS.sgemm(transA: true, transB: false, M: r, N: inF, K: R, alpha: 1, a: du.pointer, lda: r, b: xd, ldb: inF,
                   beta: 1, c: gradients + a.aOffset, ldc: inF)
        guard let dx else { return }
        if training && dropout > 0 {
            // scratch held drop(x); now it takes du·A, masked as the forward was.
            let t = scratch.pointer
            BLAS.sgemm(transA: false, transB: false, M: R, N: inF, K: r, alpha: 1, a: du.pointer, lda: r,
                       b: parameters + a.aOffset, ldb: inF, beta: 0, c: t, ldc: inF)
            let keep = 1 / (1 - dropout), key = dropoutKey, threshold = dropoutThreshold
            LoRAAdapters.inRowBlocks(R, width: inF) { elements in
                for e in elements where dropMask(key, adapter: i, element: e) >= threshold { dx[e] += t[e] * keep }
            }
        } else {
            BLAS.sgemm(transA: false, transB: false, M: R, N: inF, K: r, alpha: 1, a: du.pointer, lda: r,
                       b: parameters + a.aOffset, ldb: inF, beta: 1, c: dx, ldc: inF)
        }
    }
}

/// 24 bits of a hash of (key, adapter, element): the dropout draw of one input element.
@inline(__always)
func dropMask(_ key: UInt64, adapter: Int, element: Int) -> UInt32 {
    var z = key &+ UInt64(truncatingIfNeeded: adapter) &* 0xD1B5_4A32_D192_ED03
        &+ UInt64(truncatingIfNeeded: element) &* 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    return UInt32(truncatingIfNeeded: z >> 40)
}

/// SplitMix64 (Steele, Lea, Flood 2014): a small seeded generator, the same draws on every machine,
/// whose whole state is one UInt64 (a checkpoint carries it).
public struct SplitMix64: Sendable, Equatable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    public mutating func nextUnit() -> Double { Double(next() >> 11) / Double(1 << 53) }

    /// Uniform in [0, 1) with 24 bits.
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) / 16_777_216 }

    /// Uniform in 0..<n.
    public mutating func next(below n: Int) -> Int {
        precondition(n > 0)
        return Int(next() % UInt64(n))  // bias < n/2⁶⁴: negligible for data orders
    }
}
