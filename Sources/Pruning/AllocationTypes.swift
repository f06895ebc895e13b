import Foundation
import Kernels
import LlamaModel
import TensorIO

// The budget: which heads, KV groups and MLP channels each layer keeps (`allocate`), following
// docs/DESIGN.md "The plan" (FLAP's structures, CFSP's angular block budgets, GQA-aware units).

public enum Structure: String, CaseIterable, Sendable {
    case ulum = "UL-UM", ulmm = "UL-MM", almm = "AL-MM", alam = "AL-AM"
}

public enum AttentionUnit: String, Sendable {
    /// A KV head with its query heads; a query head from every group; one value dimension of a
    /// KV head (FASP: its v_proj row and the o_proj column of each of the group's heads).
    case group, head, vo
}

public struct AllocationOptions: Sendable {
    public var ratio: Double
    /// nil with `angularBlocks` or `widths`.
    public var structure: Structure?
    public var angularBlocks = false
    public var angularA = 1.0
    /// Each layer keeps as many attention units and MLP channels as this plan's layer (the best
    /// by the scores): budgets fixed elsewhere, e.g. CFSP's angular ones for `calibrate --sequential`.
    public var widths: [LayerPlan]?
    public var attentionUnit = AttentionUnit.group
    public var pruneAttention = true
    public var pruneMLP = true
    public var layers: ClosedRange<Int>?
    public var round: Int?
    public var minKeep = 1
    public var removeHeads = 0

    public init(ratio: Double, structure: Structure?) {
        self.ratio = ratio
        self.structure = structure
    }
}

/// One layer's shape and biases.
public struct LayerShape: Sendable {
    public var C, D, H, Hkv, F: Int
    /// Per KV head, the width of its values (D unless narrowed by V/O pruning).
    public var valueWidths: [Int]
    public var biases: Set<Projection>

    public init(config c: LlamaConfig, layer l: Int, biases: Set<Projection>) {
        C = c.hiddenSize
        D = c.headDim
        H = c.headCounts[l]
        Hkv = c.kvHeadCounts[l]
        F = c.ffnWidths[l]
        valueWidths = c.valueWidths(layer: l)
        self.biases = biases
    }

    public func has(_ p: Projection) -> Int { biases.contains(p) ? 1 : 0 }

    /// Query heads per KV head.
    public var group: Int { Hkv > 0 ? H / Hkv : 1 }
    /// Where the values lie in v_proj's rows and o_proj's columns.
    public var valueLayout: ValueLayout { ValueLayout(widths: valueWidths, headsPerGroup: group) }
    /// v_proj rows: the value widths summed.
    public var valueRows: Int { valueLayout.rowCount }

    /// Linear weights and biases of the layer.
    public var parameters: Int {
        let q = H * D, k = Hkv * D, v = valueRows, o = group * valueRows
        return q * C + q * has(.q) + k * C + k * has(.k) + v * C + v * has(.v) + C * o + C * has(.o)
            + 2 * F * C + F * (has(.gate) + has(.up)) + C * F + C * has(.down)
    }

    public var channelCost: Int { 3 * C + has(.gate) + has(.up) }
    /// Query head h's q rows and o columns (and q bias entries).
    public func headCost(_ h: Int) -> Int { C * D + D * has(.q) + C * valueWidths[h / group] }
    /// K and V rows of KV head g.
    public func kvCost(_ g: Int) -> Int { C * D + D * has(.k) + (C + has(.v)) * valueWidths[g] }
    /// One value dimension of KV head g: its v row and the o column of each of the group's heads.
    public var valueDimCost: Int { C + has(.v) + group * C }

    /// The shape left by a plan (o_proj and down_proj biases stay whatever is removed).
    public func kept(_ p: LayerPlan) -> LayerShape {
        var k = self
        k.H = p.keptHeads.count
        k.Hkv = p.keptKVHeads.count
        k.F = p.keptChannels.count
        k.valueWidths = p.keptValueWidths(valueWidths)
        return k
    }
}

public struct LayerPlan: Sendable, Equatable {
    public var keptHeads: [Int]
    public var keptKVHeads: [Int]
    public var keptChannels: [Int]
    /// The v_proj rows kept (V/O pruning), indices into the layer's value rows; nil keeps every
    /// value row of the kept KV heads.
    public var keptValueDims: [Int]?

    public init(keptHeads: [Int], keptKVHeads: [Int], keptChannels: [Int], keptValueDims: [Int]? = nil) {
        self.keptHeads = keptHeads
        self.keptKVHeads = keptKVHeads
        self.keptChannels = keptChannels
        self.keptValueDims = keptValueDims
    }

    /// The v_proj rows kept, given the layer's value widths per KV head.
    public func keptValueRows(_ widths: [Int]) -> [Int] {
        if let keptValueDims { return keptValueDims }
        let layout = ValueLayout(widths: widths, headsPerGroup: 1)
        return keptKVHeads.flatMap { layout.rows(ofGroup: $0) }
    }

    /// The value widths of the kept KV heads, given the layer's value widths per KV head.
    public func keptValueWidths(_ widths: [Int]) -> [Int] {
        guard let keptValueDims else { return keptKVHeads.map { widths[$0] } }
        let layout = ValueLayout(widths: widths, headsPerGroup: 1)
        return keptKVHeads.map { g in keptValueDims.filter(layout.rows(ofGroup: g).contains).count }
    }
}

public struct Plan: Sendable {
    public var layers: [LayerPlan]
    /// Fraction of decoder-layer linear parameters removed.
    public var achieved: Double
    public var totalParameters: Int
    public var removedParameters: Int
}

/// Options that cannot make a plan (a usage error: the scores are fine, the request is not).
public struct AllocationError: DiagnosedError {
    public var description: String
    public var kind: FailureKind { .usage }
    init(_ d: String) { description = d }
}

extension AllocationOptions {
    /// The options as `allocate` spells them on its command line; `hasAttentionScores` decides
    /// what --prune means when absent (everything the scores cover), `layerCount` bounds --layers.
    public init(ratio: Double, structure: String?, blocks: String?, angularA: Double, attentionUnit: String,
                prune: String?, layers: String?, round: Int?, minKeep: Int, removeHeads: Int,
                hasAttentionScores: Bool, layerCount: Int, widths: [LayerPlan]? = nil) throws {
        self.init(ratio: ratio, structure: nil)
        self.widths = widths
        if let structure {
            guard let s = Structure(rawValue: structure == "uniform" ? "UL-UM" : structure.uppercased()) else {
                throw AllocationError("--structure must be UL-UM, UL-MM, AL-MM, AL-AM or uniform, got '\(structure)'")
            }
            self.structure = s
        }
        if let blocks {
            guard blocks == "angular" else { throw AllocationError("--blocks must be angular, got '\(blocks)'") }
            angularBlocks = true
        }
        self.angularA = angularA
        guard let unit = AttentionUnit(rawValue: attentionUnit) else {
            throw AllocationError("--attention-unit must be group, head or vo, got '\(attentionUnit)'")
        }
        self.attentionUnit = unit
        let kinds = Set((prune ?? (hasAttentionScores && blocks == nil ? "attention,mlp" : "mlp")).split(separator: ",").map(String.init))
        guard !kinds.isEmpty, kinds.isSubset(of: ["attention", "mlp"]) else {
            throw AllocationError("--prune takes attention, mlp or attention,mlp")
        }
        pruneAttention = kinds.contains("attention")
        pruneMLP = kinds.contains("mlp")
        if let layers {
            let parts = layers.split(separator: "-").compactMap { Int($0) }
            guard parts.count == 2, parts[0] >= 0, parts[0] <= parts[1], parts[1] < layerCount else {
                throw AllocationError("--layers must be A-B with 0 ≤ A ≤ B < \(layerCount), got '\(layers)'")
            }
            self.layers = parts[0]...parts[1]
        }
        self.round = round
        self.minKeep = minKeep
        self.removeHeads = removeHeads
    }

    /// The options as the plan file's metadata records them.
    public var metadata: [String: String] {
        [
            "ratio": "\(ratio)",
            "structure": angularBlocks ? "blocks-angular" : widths != nil ? "widths" : structure?.rawValue ?? "none",
            "attention_unit": attentionUnit.rawValue,
            "prune": [pruneAttention ? "attention" : nil, pruneMLP ? "mlp" : nil].compactMap { $0 }.joined(separator: ","),
            "layers": layers.map { "\($0.lowerBound)-\($0.upperBound)" } ?? "all",
            "round": round.map(String.init) ?? "none",
            "min_keep": "\(minKeep)",
            "remove_heads": "\(removeHeads)",
        ].merging(widths.map { ["widths": Self.describe($0)] } ?? [:]) { $1 }
    }

    /// Fixed widths as the metadata records them: per layer kept channels/KV heads/heads/value rows
    /// ("-" when the plan keeps every value row of its KV heads).
    static func describe(_ widths: [LayerPlan]) -> String {
        widths.map { p in
            "\(p.keptChannels.count)/\(p.keptKVHeads.count)/\(p.keptHeads.count)/\(p.keptValueDims.map { String($0.count) } ?? "-")"
        }.joined(separator: ",")
    }
}

extension Allocation {
    /// The plan `options` give for the scores, as a plan file: the scored model's fingerprint,
    /// metric, configuration and biases, the options, and the fraction achieved.
    public static func plan(_ scores: ScoresFile, options: AllocationOptions) throws -> (plan: Plan, file: PlanFile) {
        if let recipe = scores.metadata["stats_sequential"] {
            try SequentialRecipe.requireSame(recorded: recipe, asked: options.metadata, source: scores.path, stage: "allocate")
        }
        let plan = try allocate(shapes: scores.shapes, attention: scores.attention, mlp: scores.mlp,
                                angular: scores.angular, options: options)
        var meta = options.metadata
        for key in ["fingerprint", "metric", "config", "biases", "stats_sequential"] { meta[key] = scores.metadata[key] }
        meta["achieved"] = String(format: "%.6f", plan.achieved)
        return (plan, PlanFile(layers: plan.layers, metadata: meta))
    }
}

