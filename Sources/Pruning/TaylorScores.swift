import Calibration
import Foundation
import LlamaModel

// Taylor importance as LLM-Pruner computes it (horseee/LLM-Pruner LLMPruner/pruner/hf_llama_pruner.py,
// `TaylorImportance`, with hf_prune.py's gradients), from the gradient sums of `calibrate --gradients`
// over N windows: G = Σ_n ∇ℓ_n / N (its weight.grad: the gradient of the batch's mean loss) and
// H = Σ_n (∇ℓ_n)² / N (its acc_grad, the diagonal-Fisher estimate of the Hessian).
//   salience   first: s = W⊙G     second: s = W⊙H⊙W     mix: s = W⊙G − ½·W⊙H⊙W
//   per coupled weight and channel (a row of an output projection, a column of an input one):
//              vector: |Σ s| over the channel's weights      element: Σ |s|
//   per unit:  the coupled weights' channel values reduced (sum, mean, max, prod, or first = the
//              root's: gate_proj, q_proj), then summed over a head's channels (consecutive groups)
//              by allocate.
// Coupled weights of a unit, as LLM-Pruner's dependency graph couples them (block-wise pruning):
//   MLP channel j:         gate_proj row j, up_proj row j, down_proj column j   (root gate_proj)
//   attention channel c:   q_proj row c and o_proj column c (c = h·D + d of head h; root q_proj),
//                          and k_proj, v_proj rows c when every query head has its own KV head
//                          (LLaMA-1's MHA, which LLM-Pruner targets). With grouped-query attention a
//                          KV head's rows belong to several query heads and are removed only with the
//                          whole group: they enter no channel's score (docs/DESIGN.md).
// Scores are per channel (the o_proj and down_proj input channels), like every metric here.

public struct TaylorOptions: Sendable, Equatable {
    public enum Order: String, CaseIterable, Sendable { case first, second, mix }
    public enum Granularity: String, CaseIterable, Sendable { case vector, element }
    public enum Reduction: String, CaseIterable, Sendable { case sum, mean, max, prod, first }

    public var order: Order
    public var granularity: Granularity
    public var reduce: Reduction

    public init(order: Order = .first, granularity: Granularity = .element, reduce: Reduction = .sum) {
        self.order = order
        self.granularity = granularity
        self.reduce = reduce
    }

    /// `order=first;granularity=element;reduce=sum` (the scores file's metadata `taylor`).
    public var description: String { "order=\(order.rawValue);granularity=\(granularity.rawValue);reduce=\(reduce.rawValue)" }
}

/// HyWIA's fusion of the two granularities (docs/DESIGN.md "HyWIA"): per layer and kind (attention
/// channels, MLP channels), fine f = element-wise and coarse g = vector-wise Taylor values, each
/// divided by its mean over the layer's channels of that kind (f̂, ĝ: scale-free, positive); then
/// per channel
///   adaptive:  [α_f, α_g] = softmax([f̂, ĝ] / τ),  score = α_f·f̂ + α_g·ĝ
///   equal:     score = (f̂ + ĝ) / 2          fine: score = f̂          coarse: score = ĝ
public struct HyWIAOptions: Sendable, Equatable {
    public enum Fusion: String, CaseIterable, Sendable { case adaptive, equal, fine, coarse }
    /// How each granularity is made comparable with the other within a layer's channels of one
    /// kind: replaced by its rank in [0, 1] (default: the README's ablation), divided by its mean,
    /// or by its maximum.
    public enum Normalisation: String, CaseIterable, Sendable { case mean, max, rank }
    public var fusion: Fusion
    public var temperature: Double
    public var normalisation: Normalisation

    public init(fusion: Fusion = .adaptive, temperature: Double = 1, normalisation: Normalisation = .rank) {
        self.fusion = fusion
        self.temperature = temperature
        self.normalisation = normalisation
    }

    /// `fusion=adaptive;temperature=1.0;normalise=rank` (the scores file's metadata `hywia`).
    public var description: String {
        "fusion=\(fusion.rawValue);temperature=\(temperature);normalise=\(normalisation.rawValue)"
    }

    /// One granularity's values made scale-free and still non-negative.
    func normalised(_ x: [Double]) -> [Double] {
        switch normalisation {
        case .mean:
            let mean = x.reduce(0, +) / Double(max(x.count, 1))
            return mean > 0 ? x.map { $0 / mean } : x
        case .max:
            let top = x.max() ?? 0
            return top > 0 ? x.map { $0 / top } : x
        case .rank:
            // (rank − 1)/(n − 1) ascending, ties sharing their mean rank.
            guard x.count > 1 else { return x.map { _ in 1 } }
            let order = x.indices.sorted { x[$0] < x[$1] }
            var r = [Double](repeating: 0, count: x.count)
            var i = 0
            while i < order.count {
                var j = i
                while j + 1 < order.count && x[order[j + 1]] == x[order[i]] { j += 1 }
                let mean = Double(i + j) / 2 / Double(x.count - 1)
                for k in i...j { r[order[k]] = mean }
                i = j + 1
            }
            return r
        }
    }

    /// The fused scores of one layer's channels of one kind.
    public func fuse(fine: [Double], coarse: [Double]) -> [Double] {
        precondition(fine.count == coarse.count)
        let f = normalised(fine), g = normalised(coarse)
        switch fusion {
        case .fine: return f
        case .coarse: return g
        case .equal: return zip(f, g).map { ($0 + $1) / 2 }
        case .adaptive:
            return zip(f, g).map { a, b in
                // softmax over the two logits a/τ, b/τ, shifted by their maximum
                let m = max(a, b) / temperature
                let ea = Foundation.exp(a / temperature - m), eb = Foundation.exp(b / temperature - m)
                return (ea * a + eb * b) / (ea + eb)
            }
        }
    }
}

/// One weight's salience reduced to its channels (rows and columns), at both granularities.
struct ChannelSalience {
    var elementRows: [Double], elementColumns: [Double]  // Σ|s|
    var vectorRows: [Double], vectorColumns: [Double]  // |Σ s|

    func rows(_ g: TaylorOptions.Granularity) -> [Double] { g == .element ? elementRows : vectorRows }
    func columns(_ g: TaylorOptions.Granularity) -> [Double] { g == .element ? elementColumns : vectorColumns }
}

enum TaylorScoring {
    /// Layer l's HyWIA scores: the element-wise and vector-wise Taylor channel values of the same
    /// order and reduction (one read of the gradients, one pass over the weights), fused.
    static func hywia(layer l: Int, weights w: LayerWeights, config c: LlamaConfig, stats: StatisticsFile,
                      windows N: Int, options o: TaylorOptions, fusion: HyWIAOptions) throws -> LayerScores {
        let s = try scores(layer: l, weights: w, config: c, stats: stats, windows: N, options: o)
        return LayerScores(attention: fusion.fuse(fine: s.element.attention ?? [], coarse: s.vector.attention ?? []),
                           mlp: fusion.fuse(fine: s.element.mlp, coarse: s.vector.mlp))
    }

    /// Layer l's channel scores at the options' granularity.
    static func score(layer l: Int, weights w: LayerWeights, config c: LlamaConfig, stats: StatisticsFile,
                      windows N: Int, options o: TaylorOptions) throws -> LayerScores {
        let s = try scores(layer: l, weights: w, config: c, stats: stats, windows: N, options: o)
        return o.granularity == .element ? s.element : s.vector
    }

    /// Layer l's channel scores at both granularities (`options.granularity` is not read).
    static func scores(layer l: Int, weights w: LayerWeights, config c: LlamaConfig, stats: StatisticsFile,
                       windows N: Int, options o: TaylorOptions) throws -> (element: LayerScores, vector: LayerScores) {
        let H = c.headCounts[l], Hkv = c.kvHeadCounts[l], D = c.headDim
        func salience(_ p: Projection) throws -> ChannelSalience {
            let m = w.linear(p)
            let shape = (m.outFeatures, m.inFeatures)
            let g = o.order == .second ? nil : try stats.gradient(l, p, squared: false, shape: shape)
            let h = o.order == .first ? nil : try stats.gradient(l, p, squared: true, shape: shape)
            return channels(weight: m.weight, gradientSum: g, squaresSum: h, rows: m.outFeatures, columns: m.inFeatures,
                            windows: N, order: o.order)
        }
        func reduce(_ stack: [[Double]]) -> [Double] {
            let n = stack[0].count
            return (0..<n).map { i in
                let v = stack.map { $0[i] }
                switch o.reduce {
                case .sum: return v.reduce(0, +)
                case .mean: return v.reduce(0, +) / Double(v.count)
                case .max: return v.max()!
                case .prod: return v.reduce(1, *)
                case .first: return v[0]
                }
            }
        }
        // The coupled weights of each kind, the root first: (salience, its rows or its columns).
        var attentionStack: [(ChannelSalience, rows: Bool)] = []
        if H > 0 && w.o.inFeatures > 0 {
            guard c.attentionOutputWidth(layer: l) == H * D else {
                throw StatisticsFileError("layer \(l): taylor scores heads of full-width values; this model's value heads are narrowed (a FASP V/O model)")
            }
            attentionStack = [(try salience(.q), true)]
            if H == Hkv { attentionStack += [(try salience(.k), true), (try salience(.v), true)] }
            attentionStack.append((try salience(.o), false))
        }
        let mlpStack: [(ChannelSalience, rows: Bool)] = w.down.inFeatures > 0
            ? [(try salience(.gate), true), (try salience(.up), true), (try salience(.down), false)] : []
        func layerScores(_ g: TaylorOptions.Granularity) throws -> LayerScores {
            func pick(_ stack: [(ChannelSalience, rows: Bool)]) -> [Double] {
                stack.isEmpty ? [] : reduce(stack.map { $0.rows ? $0.0.rows(g) : $0.0.columns(g) })
            }
            let attention = pick(attentionStack), mlp = pick(mlpStack)
            for (name, scores) in [("attention", attention), ("MLP", mlp)] {
                if let bad = scores.firstIndex(where: { !$0.isFinite }) {
                    throw StatisticsFileError("\(stats.path): layer \(l) \(name) channel \(bad): the taylor score is \(scores[bad]) (NaN or infinite gradients)")
                }
            }
            return LayerScores(attention: attention, mlp: mlp)
        }
        return (try layerScores(.element), try layerScores(.vector))
    }

    /// Per-row and per-column salience of one weight W[rows, columns] at both granularities
    /// (float64 accumulation).
    static func channels(weight: [Float], gradientSum: [Float]?, squaresSum: [Float]?, rows: Int, columns: Int,
                         windows N: Int, order: TaylorOptions.Order) -> ChannelSalience {
        var out = ChannelSalience(elementRows: [Double](repeating: 0, count: rows),
                                  elementColumns: [Double](repeating: 0, count: columns),
                                  vectorRows: [Double](repeating: 0, count: rows),
                                  vectorColumns: [Double](repeating: 0, count: columns))
        let inv = 1 / Double(N)
        for i in 0..<rows {
            for j in 0..<columns {
                let k = i * columns + j
                let wv = Double(weight[k])
                let first = gradientSum.map { wv * Double($0[k]) * inv } ?? 0
                let second = squaresSum.map { wv * Double($0[k]) * inv * wv } ?? 0
                let s: Double
                switch order {
                case .first: s = first
                case .second: s = second
                case .mix: s = first - 0.5 * second
                }
                out.elementRows[i] += abs(s)
                out.elementColumns[j] += abs(s)
                out.vectorRows[i] += s
                out.vectorColumns[j] += s
            }
        }
        out.vectorRows = out.vectorRows.map(abs)
        out.vectorColumns = out.vectorColumns.map(abs)
        return out
    }
}
