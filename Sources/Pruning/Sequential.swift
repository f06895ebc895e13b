import Calibration
import Foundation
import LlamaModel
import TensorIO

// Sequential pruning (docs/DESIGN.md "Sequential pruning"): `calibrate --sequential` prunes each
// layer as soon as its statistics are complete — scored, allocated, sliced and restored by the
// same library calls the stages make — so that the next layer's statistics are measured on the
// pruned layers' outputs. The statistics file records the recipe; score, allocate and restore,
// run afterwards on it, refuse settings other than the recipe's, and so rebuild exactly the model
// whose layers produced the statistics.

/// How every layer is pruned in a sequential run: the settings of score, allocate and restore.
public struct SequentialRecipe: Sendable {
    public var metric: ScoreMetric
    public var allocation: AllocationOptions
    /// nil: no compensation (Wanda-sp).
    public var restore: RestoreMethod?
    public var damp: Double

    public init(metric: ScoreMetric, allocation: AllocationOptions, restore: RestoreMethod?, damp: Double) throws {
        let local = allocation.widths != nil || allocation.structure.map { [.ulum, .ulmm].contains($0) } ?? false
        guard !allocation.angularBlocks, local else {
            throw AllocationError("--sequential prunes each layer from its own statistics: --structure UL-UM or UL-MM, or --widths PLAN (AL-MM and AL-AM compare every layer's scores, CFSP's angular budgets every block's: run them in one pass, or fix their widths with --widths)")
        }
        if allocation.pruneAttention && !metric.scoresAttention {
            throw AllocationError("the metric \(metric.rawValue) scores the MLP only: add --prune mlp")
        }
        self.metric = metric
        self.allocation = allocation
        self.restore = restore
        self.damp = damp
    }

    /// The settings as key=value pairs: the metric, allocate's plan metadata, restore and damp.
    public var fields: [String: String] {
        var f = allocation.metadata
        f["metric"] = metric.rawValue
        f["restore"] = restore?.rawValue ?? "none"
        f["damp"] = "\(damp)"
        return f
    }

    /// The recipe as the statistics file's metadata records it (`sequential`), keys sorted.
    public var description: String { Self.describe(fields) }

    static func describe(_ fields: [String: String]) -> String {
        fields.keys.sorted().map { "\($0)=\(fields[$0]!)" }.joined(separator: ";")
    }

    static func parse(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { out[parts[0]] = parts[1] }
        }
        return out
    }

    /// Refuses a stage's settings (`asked`, a subset of the recipe's keys) that differ from the
    /// recipe recorded in statistics measured sequentially (`recorded`, from `source`).
    public static func requireSame(recorded: String, asked: [String: String], source: String, stage: String) throws {
        let recipe = parse(recorded)
        let differing = asked.keys.sorted().filter { recipe[$0] != asked[$0] }
        guard differing.isEmpty else {
            let what = differing.map { "\($0) \(recipe[$0] ?? "absent") (\(stage) asks \(asked[$0]!))" }.joined(separator: ", ")
            throw SequentialError("\(source): statistics measured on layers pruned with another recipe: \(what); run \(stage) with the recipe's settings, or calibrate again")
        }
    }
}

public struct SequentialError: DiagnosedError {
    public var description: String
    public var kind: FailureKind { .usage }
    public init(_ d: String) { description = d }
}

/// Prunes one layer at a time for `calibrate --sequential`.
public final class SequentialPruner: LayerPruner {
    public let recipe: SequentialRecipe
    let dense: LlamaConfig
    let shapes: [LayerShape]
    /// The configuration with the layers pruned so far.
    public private(set) var config: LlamaConfig
    /// Each layer's plan, as decided (nil: not reached yet).
    public private(set) var plans: [LayerPlan?]
    /// Each layer's restoration, when the recipe restores.
    public private(set) var reports: [LayerRestoreReport] = []

    public init(model: Model, recipe: SequentialRecipe) {
        self.recipe = recipe
        dense = model.config
        config = model.config
        shapes = (0..<model.config.numLayers).map { l in
            LayerShape(config: model.config, layer: l, biases: Set(Projection.allCases.filter { model.hasBias(l, $0) }))
        }
        plans = [LayerPlan?](repeating: nil, count: model.config.numLayers)
    }

    public var settings: String { recipe.description }

    /// The fraction of decoder-layer parameters the recipe will remove, known before any layer runs:
    /// UL-UM, UL-MM and --widths give every layer widths from the shapes (or the plan) alone (the
    /// scores choose which units, not how many), so a plan on stand-in scores (distinct, ascending)
    /// has the run's widths.
    public func plannedFraction() throws -> Double { try standInPlan().achieved }

    private var standIn: Plan?
    private func standInPlan() throws -> Plan {
        if let standIn { return standIn }
        func ramp(_ n: Int) -> [Double] { (0..<n).map { Double($0 + 1) } }
        let attention: [[Double]?] = shapes.map { recipe.metric.scoresAttention ? ramp($0.valueLayout.columnCount) : nil }
        let plan = try Allocation.allocate(shapes: shapes, attention: attention, mlp: shapes.map { ramp($0.F) },
                                           angular: [Double](repeating: 0, count: shapes.count), options: recipe.allocation)
        standIn = plan
        return plan
    }

    /// Layer l keeps every head and value row (known from the widths before its statistics): its
    /// pruned attention half is the dense one (restoration leaves a consumer that lost nothing as
    /// it was, a bias method adding zeros), so the calibrator runs only the pruned MLP half, from
    /// the residual of the statistics pass.
    public func keepsAttentionWhole(layer l: Int) throws -> Bool {
        let p = try standInPlan().layers[l], s = shapes[l]
        return p.keptHeads.count == s.H && p.keptKVHeads.count == s.Hkv && p.keptValueRows(s.valueWidths).count == s.valueRows
    }

    public func prune(layer l: Int, weights w: LayerWeights, statistics: any StatisticsSource) throws
        -> (weights: LayerWeights, config: LlamaConfig)
    {
        let scores = try Scoring.score(recipe.metric, layer: l, weights: w, stats: statistics, windows: try statistics.windows())
        // UL-UM, UL-MM and --widths decide each layer from its own scores and the model's shapes: the
        // whole problem with the other layers' scores left at zero gives layer l's decision.
        let attention: [[Double]?] = shapes.indices.map { i in
            i == l ? scores.attention : recipe.metric.scoresAttention ? [Double](repeating: 0, count: shapes[i].valueLayout.columnCount) : nil
        }
        let mlp = shapes.indices.map { i in i == l ? scores.mlp : [Double](repeating: 0, count: shapes[i].F) }
        let plan = try Allocation.allocate(shapes: shapes, attention: attention, mlp: mlp,
                                           angular: [Double](repeating: 0, count: shapes.count), options: recipe.allocation)
        let p = plan.layers[l]
        var pruned = Slicing.slicedWeights(l, weights: w, plan: p, config: dense)
        if let method = recipe.restore {
            let report = try Restoration.restoreLayer(l, weights: w, config: dense, stats: statistics, plan: p,
                                                      method: method, damp: recipe.damp)
            for (projection, result) in [(Projection.o, report.oProj), (.down, report.downProj)] {
                var lin = pruned.linear(projection)
                lin.weight = result.weight
                if let b = result.bias { lin.bias = b } else if method != .lsq && lin.bias == nil {
                    lin.bias = [Float](repeating: 0, count: lin.outFeatures)
                }
                pruned.setLinear(projection, lin)
            }
            reports.append(report.withoutWeights)
        }
        plans[l] = p
        config.headCounts[l] = p.keptHeads.count
        config.kvHeadCounts[l] = p.keptKVHeads.count
        config.ffnWidths[l] = p.keptChannels.count
        var widths = (0..<config.numLayers).map { config.valueWidths(layer: $0) }
        widths[l] = p.keptValueWidths(dense.valueWidths(layer: l))
        config = config.withValueWidths(widths)
        return (pruned, config)
    }
}
