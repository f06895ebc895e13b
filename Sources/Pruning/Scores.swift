import Calibration
import Foundation
import LlamaModel
import TensorIO

// Importance scores of the prunable units, per decoder layer, from a model and its calibration
// statistics (`score`). Scores are given per channel at the two consumers whose input columns the
// units own: the o_proj input (H·D channels: head h owns channels h·D ..< (h+1)·D; for FASP each
// channel is a V/O dimension) and the down_proj input (F MLP channels). `allocate` aggregates
// them into heads or KV groups as the structure asks (FLAP: sum per head within a layer,
// standardise then mean across layers).

public enum ScoreMetric: String, CaseIterable, Sendable {
    case flap, wifv, ifv, wifn
    case wandaSP = "wanda-sp"
    case magSP = "mag-sp"
    case cfsp, fasp, taylor, hywia

    /// Formula and source of each metric (printed by `score --help`, kept in DESIGN.md).
    public var formula: String {
        switch self {
        case .flap, .wifv:
            return "FLAP WIFV (lib/prune.py): fluc_j · Σ_i W_ij² on o_proj and down_proj columns; squared at o_proj"
        case .ifv: return "FLAP IFV: fluc_j; squared at o_proj"
        case .wifn:
            return "FLAP WIFN: mean_i |W_ij| · √(Σx_j²/N) (N windows); squared at o_proj"
        case .wandaSP:
            return "Wanda-sp (FLAP's prune_wanda_sp): mean_i |W_ij| · √(Σx_j²/N)"
        case .magSP: return "magnitude-sp (FLAP's prune_magnitude_sp): ‖W[:, j]‖₂"
        case .cfsp:
            return "CFSP three_w_one_wa, a=b=c=1 (lib/prune.py): mean_i of the column-normalised |W_down·√s|, |W_upᵀ|, |W_gateᵀ|, times √s, s = Σx_j²/N; each normalised column sums to 1, so it is (3/C)·√s: the activation norm. MLP only"
        case .fasp: return "FASP: Σ_i |W_ij| · ‖X_j‖₂, ‖X_j‖₂ = √(Σx_j²), on o_proj (V/O dimensions) and down_proj columns"
        case .taylor:
            return "LLM-Pruner Taylor (hf_llama_pruner.py TaylorImportance): salience W⊙G (--order first), W⊙H⊙W (second), W⊙G − ½W⊙H⊙W (mix), G and H the mean gradient and mean squared per-window gradient (calibrate --gradients); per channel |Σ s| (--granularity vector) or Σ|s| (element) over each coupled weight's row or column (gate, up rows and down column; q row and o column, k and v rows too when H = Hkv), reduced across them (--reduce sum|mean|max|prod|first)"
        case .hywia:
            return "HyWIA (our design; the paper gives no code, docs/DESIGN.md): the element-wise (fine) and vector-wise (coarse) Taylor values of each channel, each divided by its layer mean, fused per channel by softmax weights over the two (--fusion adaptive, --temperature τ), or their mean (equal), or one alone (fine, coarse)"
        }
    }

    /// Metrics that score attention channels (CFSP prunes the MLP only).
    public var scoresAttention: Bool { self != .cfsp }
}

/// Per-column statistics of a weight W[out, in] (row-major).
struct ColumnStats {
    var sumSquares: [Double]
    var absSum: [Double]
    let rows: Int

    init(_ w: Linear) {
        let n = w.inFeatures, m = w.outFeatures
        rows = m
        sumSquares = [Double](repeating: 0, count: n)
        absSum = [Double](repeating: 0, count: n)
        w.weight.withUnsafeBufferPointer { p in
            for i in 0..<m {
                for j in 0..<n {
                    let v = Double(p[i * n + j])
                    sumSquares[j] += v * v
                    absSum[j] += abs(v)
                }
            }
        }
    }
}

/// The channel scores of one layer.
public struct LayerScores {
    public var attention: [Double]?
    public var mlp: [Double]
}

public enum Scoring {
    /// The scores of layer l from its weights and the statistics file (N windows).
    public static func score(_ metric: ScoreMetric, layer l: Int, weights w: LayerWeights, stats: any StatisticsSource,
                             windows N: Int, config: LlamaConfig? = nil, taylor: TaylorOptions = TaylorOptions(),
                             hywia: HyWIAOptions = HyWIAOptions()) throws -> LayerScores {
        if metric == .taylor || metric == .hywia {
            guard let config else { preconditionFailure("\(metric.rawValue) scores need the model's configuration") }
            guard let file = stats as? StatisticsFile else {
                throw StatisticsFileError("\(stats.path): \(metric.rawValue) scores need a statistics file with gradients (calibrate --gradients), not a sequential run's")
            }
            if metric == .hywia {
                return try TaylorScoring.hywia(layer: l, weights: w, config: config, stats: file, windows: N, options: taylor,
                                               fusion: hywia)
            }
            return try TaylorScoring.score(layer: l, weights: w, config: config, stats: file, windows: N, options: taylor)
        }
        func consumerScores(_ p: StatPoint, _ weight: Linear, squared: Bool) throws -> [Double] {
            let cols = ColumnStats(weight)
            let width = weight.inFeatures
            func stat(_ p: StatPoint, _ f: PointField) throws -> [Double] { try stats.point(l, p, f, width: width) }
            let rows = Double(max(cols.rows, 1))
            var out: [Double]
            switch metric {
            case .flap, .wifv:
                let fluc = try stat(p, .fluctuation)
                out = (0..<width).map { fluc[$0] * cols.sumSquares[$0] }
            case .ifv:
                out = try stat(p, .fluctuation)
            case .wifn, .wandaSP:
                let q = try stat(p, .sumsq)
                out = (0..<width).map { cols.absSum[$0] / rows * (q[$0] / Double(N)).squareRoot() }
            case .magSP:
                out = cols.sumSquares.map { $0.squareRoot() }
            case .cfsp:
                let q = try stat(p, .sumsq)
                out = q.map { 3 / rows * ($0 / Double(N)).squareRoot() }
            case .fasp:
                let q = try stat(p, .sumsq)
                out = (0..<width).map { cols.absSum[$0] * q[$0].squareRoot() }
            case .taylor, .hywia:
                preconditionFailure("\(metric) is scored by TaylorScoring")
            }
            if let bad = out.firstIndex(where: { !$0.isFinite }) {
                throw StatisticsFileError("\(stats.path): layer \(l) \(p.rawValue) channel \(bad): the score is \(out[bad]) (NaN or infinite statistics)")
            }
            return squared ? out.map { $0 * $0 } : out
        }
        let squareAttention = [.flap, .wifv, .ifv, .wifn].contains(metric)
        let attention = metric.scoresAttention && w.o.inFeatures > 0
            ? try consumerScores(.oProjInput, w.o, squared: squareAttention) : (metric.scoresAttention ? [] : nil)
        let mlp = w.down.inFeatures > 0 ? try consumerScores(.downProjInput, w.down, squared: false) : []
        return LayerScores(attention: attention, mlp: mlp)
    }
}
