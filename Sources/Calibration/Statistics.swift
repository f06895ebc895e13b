import Foundation
import Kernels
import LlamaModel
import TensorIO

// Activation statistics of one decoder layer, accumulated in float64 while the layer runs over
// the calibration windows (DESIGN.md, calibrate). Every quantity is a sum over tokens, so that
// shards add up; FLAP's fluctuation, which is not a sum, is derived from per-window sums (see
// `flapFluctuation`).

/// A point whose input statistics are collected, named by the module whose input it is.
public enum StatPoint: String, CaseIterable, Sendable {
    /// After input_layernorm: the input of q_proj (and of k_proj and v_proj, the same rows).
    case attentionInput = "self_attn.q_proj"
    /// The attention heads' output: the input of o_proj.
    case oProjInput = "self_attn.o_proj"
    /// After post_attention_layernorm: the input of gate_proj (and of up_proj).
    case mlpInput = "mlp.gate_proj"
    /// silu(gate)·up: the input of down_proj.
    case downProjInput = "mlp.down_proj"

    /// The points where FLAP measures its fluctuation (the consumers of the pruned units).
    public var hasFluctuation: Bool { self == .oProjInput || self == .downProjInput }

    /// `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj` (the module
    /// whose input the point is).
    public init?(module: String) {
        switch module {
        case "q_proj", "k_proj", "v_proj", "qkv": self = .attentionInput
        case "o_proj": self = .oProjInput
        case "gate_proj", "up_proj", "gate_up": self = .mlpInput
        case "down_proj": self = .downProjInput
        default: return nil
        }
    }

    public var shortName: String { String(rawValue.split(separator: ".").last!) }

    public func width(_ c: LlamaConfig, layer l: Int) -> Int {
        switch self {
        case .attentionInput, .mlpInput: return c.hiddenSize
        case .oProjInput: return c.attentionOutputWidth(layer: l)
        case .downProjInput: return c.ffnWidths[l]
        }
    }
}

/// The tensor names of a statistics file; the only place that spells them.
public enum StatNames {
    public static func point(_ l: Int, _ p: StatPoint, _ field: PointField) -> String {
        "model.layers.\(l).\(p.rawValue).input.\(field.rawValue)"
    }

    public static func block(_ l: Int, _ field: BlockField) -> String {
        "model.layers.\(l).block.\(field.rawValue)"
    }

    /// Σ over windows of the gradient of the window's mean next-token loss (`calibrate --gradients`),
    /// or of its square (`--gradients second`), of projection p's weight: [out, in].
    public static func gradient(_ l: Int, _ p: Projection, squared: Bool) -> String {
        TensorNames.weight(l, p) + (squared ? ".grad_sq_sum" : ".grad_sum")
    }

    /// The loss the gradients are of, summed over its positions, and the positions: [1] each.
    public static let lossSum = "lm_loss.sum"
    public static let lossCount = "lm_loss.count"

    public static let format = "prunekit-stats"
}

/// Which gradient statistics a run collects (`calibrate --gradients first|second`).
public struct GradientLayout: Sendable, Equatable {
    /// Also Σ of per-window squared gradients (one backward per window).
    public var second: Bool
    /// F32 or BF16.
    public var dtype: DType

    public init(second: Bool, dtype: DType) {
        self.second = second
        self.dtype = dtype
    }

    /// The loss whose gradients are stored (metadata `gradient_loss`): the mean next-token
    /// cross-entropy of each window, summed over windows.
    public static let loss = "next-token cross-entropy, mean per window"
}

public enum PointField: String, CaseIterable, Sendable {
    case count, sum, sumsq, gram, fluctuation
    /// Per-window sums [windows, width] (shard files only; merged into `fluctuation`).
    case windowSum = "window_sum"
    case windowSumsq = "window_sumsq"
}

public enum BlockField: String, CaseIterable, Sendable {
    case count
    /// Σ over tokens of arccos(cos(h_in, h_out))/π (CFSP's angular block importance).
    case angularSum = "angular_sum"
    case cosineSum = "cosine_sum"
    /// Σ over tokens of the mean over channels of (h_in − h_out)² and |h_in − h_out|.
    case mseSum = "mse_sum"
    case maeSum = "mae_sum"
}

/// What a run collects beyond the sums.
public struct StatisticsLayout: Sendable, Equatable {
    public var gramPoints: Set<StatPoint> = []
    public var gramDType: DType = .F32
    /// Windows in this file; with `complete` false the file is a shard and keeps per-window
    /// sums instead of the fluctuation.
    public var windows: Int
    public var complete: Bool = true
    public var gradients: GradientLayout?

    public init(gramPoints: Set<StatPoint> = [], gramDType: DType = .F32, windows: Int, complete: Bool = true,
                gradients: GradientLayout? = nil) {
        self.gramPoints = gramPoints
        self.gramDType = gramDType
        self.windows = windows
        self.complete = complete
        self.gradients = gradients
    }

    /// Every entry of the file, in order: per layer the four points (count, sum, sumsq, gram,
    /// fluctuation or window sums), the block statistics, then with gradients each projection's
    /// gradient sums; with gradients, the loss at the end.
    public func entries(_ c: LlamaConfig) -> [TensorEntry] {
        var out: [TensorEntry] = []
        for l in 0..<c.numLayers {
            for p in StatPoint.allCases {
                let w = p.width(c, layer: l)
                out.append(TensorEntry(name: StatNames.point(l, p, .count), dtype: .I64, shape: [1]))
                out.append(TensorEntry(name: StatNames.point(l, p, .sum), dtype: .F64, shape: [w]))
                out.append(TensorEntry(name: StatNames.point(l, p, .sumsq), dtype: .F64, shape: [w]))
                if gramPoints.contains(p) {
                    out.append(TensorEntry(name: StatNames.point(l, p, .gram), dtype: gramDType, shape: [w, w]))
                }
                if p.hasFluctuation {
                    if complete {
                        out.append(TensorEntry(name: StatNames.point(l, p, .fluctuation), dtype: .F64, shape: [w]))
                    } else {
                        out.append(TensorEntry(name: StatNames.point(l, p, .windowSum), dtype: .F64, shape: [windows, w]))
                        out.append(TensorEntry(name: StatNames.point(l, p, .windowSumsq), dtype: .F64, shape: [windows, w]))
                    }
                }
            }
            out.append(TensorEntry(name: StatNames.block(l, .count), dtype: .I64, shape: [1]))
            for f in BlockField.allCases where f != .count {
                out.append(TensorEntry(name: StatNames.block(l, f), dtype: .F64, shape: [1]))
            }
            if let g = gradients {
                for p in Projection.allCases {
                    let (rows, cols) = TensorNames.projectionShape(p, config: c, layer: l)
                    for squared in g.second ? [false, true] : [false] {
                        out.append(TensorEntry(name: StatNames.gradient(l, p, squared: squared), dtype: g.dtype,
                                               shape: [rows, cols]))
                    }
                }
            }
        }
        if gradients != nil {
            out.append(TensorEntry(name: StatNames.lossSum, dtype: .F64, shape: [1]))
            out.append(TensorEntry(name: StatNames.lossCount, dtype: .I64, shape: [1]))
        }
        return out
    }
}

/// Sums at one point of one layer.
public final class PointStatistics {
    public let width: Int
    public var count: Int64 = 0
    public var sum: [Double]
    public var sumsq: [Double]
    /// Upper triangle accumulated by dsyrk; `symmetrised()` fills the lower one.
    public var gram: [Double]?
    /// Per-window sums, windows × width (points with a fluctuation).
    public var windowSum: [Double]?
    public var windowSumsq: [Double]?
    private var converted: [Double] = []

    init(width: Int, gram: Bool, windows: Int?) {
        self.width = width
        sum = [Double](repeating: 0, count: width)
        sumsq = [Double](repeating: 0, count: width)
        self.gram = gram ? [Double](repeating: 0, count: width * width) : nil
        if let windows {
            windowSum = [Double](repeating: 0, count: windows * width)
            windowSumsq = [Double](repeating: 0, count: windows * width)
        }
    }

    /// Adds rows x[R, width] holding whole windows of T rows; `firstWindow` is the index (in
    /// this run) of the batch's first window.
    func add(_ x: UnsafePointer<Float>, rows R: Int, windowLength T: Int, firstWindow: Int) {
        let w = width
        guard w > 0, R > 0 else {
            count += Int64(R)
            return
        }
        var s = [Double](repeating: 0, count: w), q = [Double](repeating: 0, count: w)
        s.withUnsafeMutableBufferPointer { s in
            q.withUnsafeMutableBufferPointer { q in
                for window in 0..<(R / T) {
                    for j in 0..<w { s[j] = 0; q[j] = 0 }
                    for r in window * T..<(window + 1) * T {
                        let row = x + r * w
                        for j in 0..<w {
                            let v = Double(row[j])
                            s[j] += v
                            q[j] += v * v
                        }
                    }
                    for j in 0..<w {
                        sum[j] += s[j]
                        sumsq[j] += q[j]
                    }
                    if windowSum != nil {
                        let base = (firstWindow + window) * w
                        for j in 0..<w {
                            windowSum![base + j] = s[j]
                            windowSumsq![base + j] = q[j]
                        }
                    }
                }
            }
        }
        count += Int64(R)
        if gram != nil {
            if converted.count < R * w { converted = [Double](repeating: 0, count: R * w) }
            converted.withUnsafeMutableBufferPointer { d in
                for i in 0..<(R * w) { d[i] = Double(x[i]) }
                gram!.withUnsafeMutableBufferPointer {
                    BLAS.gramAccumulate(x: d.baseAddress!, rows: R, width: w, into: $0.baseAddress!)
                }
            }
        }
    }

    /// Fills the Gram matrix's lower triangle from the upper, in place (no second matrix: at
    /// LLaMA-3-8B's down_proj one is 1.6 GB).
    func symmetriseGram() {
        let n = width
        gram?.withUnsafeMutableBufferPointer { g in
            for i in 0..<n {
                for j in 0..<i { g[i * n + j] = g[j * n + i] }
            }
        }
    }
}

/// CFSP's block statistics: how far a block turns each token's hidden state.
public struct BlockStatistics {
    public var count: Int64 = 0
    public var angularSum = 0.0
    public var cosineSum = 0.0
    public var mseSum = 0.0
    public var maeSum = 0.0

    /// Adds the rows a (block input) and b (block output), [R, C]. Per token, in float64:
    /// cos = a·b / (‖a‖‖b‖), 0.5 when that is 0/0 (CFSP's nan_to_num), clamped to [−1, 1].
    mutating func add(input a: UnsafePointer<Float>, output b: UnsafePointer<Float>, rows R: Int, width C: Int) {
        for r in 0..<R {
            var dot = 0.0, na = 0.0, nb = 0.0, se = 0.0, ae = 0.0
            let x = a + r * C, y = b + r * C
            for j in 0..<C {
                let u = Double(x[j]), v = Double(y[j])
                dot += u * v
                na += u * u
                nb += v * v
                se += (u - v) * (u - v)
                ae += abs(u - v)
            }
            let denominator = na.squareRoot() * nb.squareRoot()
            var cos = denominator == 0 && dot == 0 ? 0.5 : dot / denominator
            if !cos.isFinite { cos = 0.5 }
            cos = min(1, max(-1, cos))
            angularSum += acos(cos) / Double.pi
            cosineSum += cos
            mseSum += se / Double(C)
            maeSum += ae / Double(C)
        }
        count += Int64(R)
    }
}

/// FLAP's fluctuation of a point's input, as its reference code (`BiasGPT.add_batch`, one
/// calibration sample per call) accumulates it, from per-window sums s_n and sums of squares
/// q_n over the T rows of window n, in window order:
///   baseline ← baseline·n/(n+1) + (s_n/T)/(n+1)
///   fluc ← 0 for n = 0; else fluc·(n−1)/n + Σ_t (x_t − baseline)²/(n+1),
/// with Σ_t (x_t − b)² = q_n − 2·b·s_n + T·b² (the reference subtracts the baseline just
/// updated, because its "old" baseline aliases the new one). The result is
/// (1/(N−1)) Σ_{n≥1} n/(n+1) Σ_t (x_{n,t} − μ_{n+1})², μ_{n+1} the mean of the first n+1 window
/// means: not the sample variance times a constant, since the first window's deviations are
/// dropped and each later window is measured against a running mean.
public func flapFluctuation(windowSum: [Double], windowSumsq: [Double], windows N: Int, windowLength T: Int,
                            width w: Int) -> [Double] {
    var baseline = [Double](repeating: 0, count: w)
    var fluc = [Double](repeating: 0, count: w)
    let t = Double(T)
    for n in 0..<N {
        let dn = Double(n)
        for j in 0..<w {
            let s = windowSum[n * w + j], q = windowSumsq[n * w + j]
            baseline[j] = baseline[j] * dn / (dn + 1) + (s / t) / (dn + 1)
            if n == 0 {
                fluc[j] = 0
            } else {
                let b = baseline[j]
                fluc[j] = fluc[j] * (dn - 1) / dn + (q - 2 * b * s + t * b * b) / (dn + 1)
            }
        }
    }
    return fluc
}

/// The statistics of one layer while it runs.
public final class LayerStatistics {
    public let layer: Int
    public var points: [StatPoint: PointStatistics] = [:]
    public var block = BlockStatistics()
    /// Σ of gradients (and of squared per-window gradients) of the layer's weights, from the
    /// gradient pass, when the layout has gradients.
    public var gradient: LayerWeights?
    public var gradientSquares: LayerWeights?
    let windowLength: Int
    let hiddenSize: Int
    private var blockInput: [Float] = []

    init(layer l: Int, config c: LlamaConfig, layout: StatisticsLayout, windowLength T: Int) {
        layer = l
        windowLength = T
        hiddenSize = c.hiddenSize
        for p in StatPoint.allCases {
            points[p] = PointStatistics(width: p.width(c, layer: l), gram: layout.gramPoints.contains(p),
                                        windows: p.hasFluctuation ? layout.windows : nil)
        }
    }

    /// Feeds one event of `Runner.runLayers` for this layer.
    func observe(_ event: LayerEvent) {
        let T = windowLength
        switch event {
        case .blockInput(let rows, _, let count):
            blockInput = Array(UnsafeBufferPointer(start: rows, count: count * hiddenSize))
        case .tap(let tap, let first):
            switch tap {
            case .attention(let input, let heads, let rows):
                points[.attentionInput]!.add(input, rows: rows, windowLength: T, firstWindow: first / T)
                points[.oProjInput]!.add(heads, rows: rows, windowLength: T, firstWindow: first / T)
            case .mlp(let input, let hidden, let rows):
                points[.mlpInput]!.add(input, rows: rows, windowLength: T, firstWindow: first / T)
                points[.downProjInput]!.add(hidden, rows: rows, windowLength: T, firstWindow: first / T)
            }
        case .blockOutput(let rows, _, let count):
            blockInput.withUnsafeBufferPointer {
                block.add(input: $0.baseAddress!, output: rows, rows: count, width: hiddenSize)
            }
        }
    }

    /// The fields as the statistics file holds them (`write`): the fluctuation of a complete run,
    /// the Gram matrix rounded to the layout's dtype.
    func field(_ p: StatPoint, _ field: PointField, layout: StatisticsLayout) -> [Double]? {
        let s = points[p]!
        switch field {
        case .count: return [Double(s.count)]
        case .sum: return s.sum
        case .sumsq: return s.sumsq
        case .gram:
            guard layout.gramPoints.contains(p), s.gram != nil else { return nil }
            s.symmetriseGram()  // idempotent: the lower triangle is only ever written from the upper
            return layout.gramDType == .F32 ? s.gram!.map { Double(Float($0)) } : s.gram!
        case .fluctuation:
            guard p.hasFluctuation, layout.complete else { return nil }
            return flapFluctuation(windowSum: s.windowSum!, windowSumsq: s.windowSumsq!, windows: layout.windows,
                                   windowLength: windowLength, width: s.width)
        case .windowSum: return layout.complete ? nil : s.windowSum
        case .windowSumsq: return layout.complete ? nil : s.windowSumsq
        }
    }

    /// Writes this layer's tensors, in the layout's order.
    func write(to writer: TensorFileWriter, layout: StatisticsLayout) throws {
        let l = layer
        for p in StatPoint.allCases {
            let s = points[p]!
            try writer.write(StatNames.point(l, p, .count), integers: [Int(s.count)])
            try writer.write(StatNames.point(l, p, .sum), doubles: s.sum)
            try writer.write(StatNames.point(l, p, .sumsq), doubles: s.sumsq)
            if layout.gramPoints.contains(p), s.gram != nil {
                // Symmetrised in place and rounded to the entry's dtype by the writer, chunk by chunk:
                // the same values as `field(.gram)` without two more copies of the matrix.
                s.symmetriseGram()
                try writer.write(StatNames.point(l, p, .gram), doubles: s.gram!)
            }
            if p.hasFluctuation {
                if let f = field(p, .fluctuation, layout: layout) {
                    try writer.write(StatNames.point(l, p, .fluctuation), doubles: f)
                } else {
                    try writer.write(StatNames.point(l, p, .windowSum), doubles: s.windowSum!)
                    try writer.write(StatNames.point(l, p, .windowSumsq), doubles: s.windowSumsq!)
                }
            }
        }
        try writer.write(StatNames.block(l, .count), integers: [Int(block.count)])
        try writer.write(StatNames.block(l, .angularSum), doubles: [block.angularSum])
        try writer.write(StatNames.block(l, .cosineSum), doubles: [block.cosineSum])
        try writer.write(StatNames.block(l, .mseSum), doubles: [block.mseSum])
        try writer.write(StatNames.block(l, .maeSum), doubles: [block.maeSum])
        if let g = layout.gradients {
            guard let sums = gradient, !g.second || gradientSquares != nil else {
                throw CalibrationError("layer \(l): the gradient statistics were not computed")
            }
            for p in Projection.allCases {
                try writer.write(StatNames.gradient(l, p, squared: false), floats: sums.linear(p).weight)
                if g.second { try writer.write(StatNames.gradient(l, p, squared: true), floats: gradientSquares!.linear(p).weight) }
            }
        }
    }
}

/// One layer's statistics in memory, read as the statistics file will hold them.
public struct LayerStatisticsSource: StatisticsSource {
    public let statistics: LayerStatistics
    public let layout: StatisticsLayout
    public let path: String

    public init(_ statistics: LayerStatistics, layout: StatisticsLayout, path: String) {
        self.statistics = statistics
        self.layout = layout
        self.path = path
    }

    func values(_ l: Int, _ p: StatPoint, _ f: PointField) throws -> [Double]? {
        guard l == statistics.layer else {
            throw StatisticsFileError("\(path): layer \(l) asked of layer \(statistics.layer)'s statistics")
        }
        return statistics.field(p, f, layout: layout)
    }

    public func point(_ l: Int, _ p: StatPoint, _ field: PointField, width: Int) throws -> [Double] {
        guard let v = try values(l, p, field) else {
            throw StatisticsFileError("\(path): \(StatNames.point(l, p, field)) is not collected")
        }
        guard v.count == width else {
            throw StatisticsFileError("\(path): layer \(l) statistics at \(p.shortName) have \(v.count) channels, the model \(width)")
        }
        return v
    }

    public func count(_ l: Int, _ p: StatPoint) throws -> Int { Int(try values(l, p, .count)![0]) }

    public func windows() throws -> Int { layout.windows }

    public func gram(_ l: Int, _ p: StatPoint) throws -> [Double]? { try values(l, p, .gram) }
}
