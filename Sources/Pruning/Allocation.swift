import Foundation
import Kernels
import LlamaModel

// The budget: which heads, KV groups and MLP channels each layer keeps (`allocate`), following
// docs/DESIGN.md "The plan" (FLAP's structures, CFSP's angular block budgets, GQA-aware units).
// Named steps, each testable alone:
//   1. units       AttentionUnits.build: heads, KV groups, head slices or value dimensions per layer
//                  with their exact parameter costs (AllocationUnits.swift)
//   2. scores      HeadScores: channel scores summed per unit (raw) and standardised per layer
//   3. structure   one function per structure: uniformLayersUniformModules (UL-UM),
//                  uniformLayersMixedModules (UL-MM), adaptiveLayersMixedModules (AL-MM),
//                  adaptiveLayersAdaptiveModules (AL-AM), angularBlockBudgets (CFSP)
//   4. rounding    roundAndKeepMinimum: --round K and --min-keep
//   5. plan        assemblePlan: kept indices per layer and the fraction achieved, from the shapes
//                  the plan leaves
// Names: P is the ratio asked, "parameters" always counts decoder-layer linear weights and biases.

/// Everything a structure reads: the layers' shapes, units and channel scores.
struct AllocationProblem {
    let shapes: [LayerShape]
    let units: [[AttentionUnitSpec]]
    let mlp: [[Double]]
    let mlpStandardised: [[Double]]
    let angular: [Double]
    let options: AllocationOptions
    /// The layers --layers lets allocation prune.
    let prunedLayers: [Int]
    /// Decoder-layer linear parameters of the whole model.
    let totalParameters: Int
    /// FLAP's unit of cost in its global thresholds: one MLP channel's weights, 3C.
    let channelWeightCost: Double

    init(shapes: [LayerShape], attention: [[Double]?], mlp: [[Double]], angular: [Double], options o: AllocationOptions) throws {
        if o.pruneAttention && attention.contains(where: { $0 == nil }) {
            throw AllocationError("the scores hold no attention scores (CFSP scores the MLP only): use --prune mlp")
        }
        self.shapes = shapes
        units = shapes.indices.map { AttentionUnits.build(shape: shapes[$0], channelScores: attention[$0] ?? [], unit: o.attentionUnit) }
        self.mlp = mlp
        mlpStandardised = mlp.map(Allocation.standardise)
        self.angular = angular
        options = o
        prunedLayers = shapes.indices.filter { l in o.layers.map { $0.contains(l) } ?? true }
        totalParameters = shapes.map(\.parameters).reduce(0, +)
        channelWeightCost = Double(3 * (shapes.first?.C ?? 1))
    }

    var layerCount: Int { shapes.count }
}

/// Per layer, which attention units and MLP channels stay.
struct Selection {
    var keepUnit: [[Bool]]
    var keepChannel: [[Bool]]

    /// Everything kept.
    init(_ problem: AllocationProblem) {
        keepUnit = problem.units.map { [Bool](repeating: true, count: $0.count) }
        keepChannel = problem.shapes.map { [Bool](repeating: true, count: $0.F) }
    }

    /// Parameters of layer l's removed attention units.
    func removedAttentionCost(_ l: Int, _ problem: AllocationProblem) -> Int {
        zip(problem.units[l], keepUnit[l]).reduce(0) { $0 + ($1.1 ? 0 : $1.0.cost) }
    }

    /// Layer l keeps at least --min-keep attention units (its best ones).
    mutating func keepMinimumAttention(_ l: Int, _ problem: AllocationProblem) {
        let count = problem.units[l].count, least = min(problem.options.minKeep, count)
        if count > 0, keepUnit[l].filter({ $0 }).count < least {
            keepUnit[l] = Allocation.best(problem.units[l].map(\.raw), count: least)
        }
    }
}

public enum Allocation {
    /// `attention[l]`: o_proj input channel scores (nil when the metric scored the MLP only);
    /// `mlp[l]`: MLP channel scores; `angular[l]`: block angular sums.
    public static func allocate(shapes: [LayerShape], attention: [[Double]?], mlp: [[Double]],
                                angular: [Double], options o: AllocationOptions) throws -> Plan {
        let problem = try AllocationProblem(shapes: shapes, attention: attention, mlp: mlp, angular: angular, options: o)
        var selection = Selection(problem)
        if o.ratio == 0 && o.removeHeads == 0 {
            // Nothing to remove (FLAP's AL-AM threshold would still take the lowest unit).
        } else if o.angularBlocks {
            selection = try angularBlockBudgets(problem)
        } else if o.widths != nil {
            selection = try fixedWidths(problem)
        } else if let structure = o.structure {
            switch structure {
            case .ulum: selection = uniformLayersUniformModules(problem)
            case .ulmm: selection = uniformLayersMixedModules(problem)
            case .almm: selection = adaptiveLayersMixedModules(problem)
            case .alam: selection = adaptiveLayersAdaptiveModules(problem)
            }
        } else {
            throw AllocationError("give --structure or --blocks angular")
        }
        roundAndKeepMinimum(&selection, problem)
        return assemblePlan(selection, problem)
    }

    // MARK: Structures

    /// FLAP's per-layer rule: ascending sort, threshold at `index`, keep ≥ (all go when the
    /// index is past the end).
    package static func keepAtLeast(_ scores: [Double], removing index: Int) -> [Bool] {
        guard !scores.isEmpty else { return [] }
        if index >= scores.count { return [Bool](repeating: false, count: scores.count) }
        let t = scores.sorted()[max(index, 0)]
        return scores.map { $0 >= t }
    }

    /// The ratio each pruned layer removes so that the model loses P: P' = P · (all parameters) /
    /// (parameters of the pruned layers that hold a pruned kind), P itself when every layer is pruned.
    static func perLayerRatio(_ problem: AllocationProblem) -> Double {
        let o = problem.options
        let active = problem.prunedLayers.filter {
            (o.pruneAttention && !problem.units[$0].isEmpty) || (o.pruneMLP && problem.shapes[$0].F > 0)
        }
        let activeParameters = active.reduce(0) { $0 + problem.shapes[$1].parameters }
        let total = problem.totalParameters
        return activeParameters == total || activeParameters == 0 ? o.ratio : o.ratio * Double(total) / Double(activeParameters)
    }

    /// UL-UM: every pruned layer removes the same fraction of each pruned kind, the fraction
    /// that takes P' of the layer from the kinds pruned.
    static func uniformLayersUniformModules(_ problem: AllocationProblem) -> Selection {
        var selection = Selection(problem)
        let o = problem.options, ratio = perLayerRatio(problem)
        for l in problem.prunedLayers {
            let s = problem.shapes[l], units = problem.units[l]
            // A kind's parameters in the layer (with its o_proj or down_proj bias, so that the
            // fraction is P when every kind is pruned; V/O units cannot remove q and k).
            let attentionParameters = units.isEmpty ? 0 : units.reduce(0) { $0 + $1.cost } + s.C * s.has(.o)
            let mlpParameters = s.F == 0 ? 0 : s.F * s.channelCost + s.C * s.has(.down)
            let prunable = (o.pruneAttention ? attentionParameters : 0) + (o.pruneMLP ? mlpParameters : 0)
            guard prunable > 0 else { continue }
            let fraction = min(1, ratio * Double(s.parameters) / Double(prunable))
            if o.pruneAttention {
                selection.keepUnit[l] = keepAtLeast(units.map(\.raw), removing: Int(fraction * Double(units.count)))
            }
            if o.pruneMLP { selection.keepChannel[l] = keepAtLeast(problem.mlp[l], removing: Int(fraction * Double(s.F))) }
        }
        return selection
    }

    /// UL-MM: each pruned layer removes --remove-heads / (pruned layers) attention units, then as
    /// many MLP channels as its remaining budget P' buys.
    static func uniformLayersMixedModules(_ problem: AllocationProblem) -> Selection {
        var selection = Selection(problem)
        let o = problem.options, ratio = perLayerRatio(problem)
        let perLayerUnits = problem.prunedLayers.isEmpty ? 0 : o.removeHeads / problem.prunedLayers.count
        for l in problem.prunedLayers {
            let s = problem.shapes[l]
            var removedCost = 0
            if o.pruneAttention && !problem.units[l].isEmpty {
                selection.keepUnit[l] = keepAtLeast(problem.units[l].map(\.raw), removing: perLayerUnits)
                selection.keepMinimumAttention(l, problem)
                removedCost = selection.removedAttentionCost(l, problem)
            }
            if o.pruneMLP {
                let n = Int(floor((ratio * Double(s.parameters) - Double(removedCost)) / Double(s.channelCost)))
                selection.keepChannel[l] = keepAtLeast(problem.mlp[l], removing: max(0, n))
            }
        }
        return selection
    }

    /// Marks the `count` lowest of `candidates` (by standardised score) as removed: everything
    /// at or below the count-th lowest score goes, ties included.
    package static func removeLowest<ID>(_ candidates: [(score: Double, id: ID)], count: Int, _ remove: (ID) -> Void) {
        guard count > 0, !candidates.isEmpty else { return }
        let sorted = candidates.map(\.score).sorted(by: >)
        let threshold = sorted[max(0, sorted.count - min(count, sorted.count))]
        for c in candidates where !(c.score > threshold) { remove(c.id) }
    }

    /// AL-MM: --remove-heads attention units chosen across layers by standardised score, then the
    /// MLP channels the rest of P·(all parameters) buys, also across layers.
    static func adaptiveLayersMixedModules(_ problem: AllocationProblem) -> Selection {
        var selection = Selection(problem)
        let o = problem.options
        var removedCost = 0
        if o.pruneAttention && o.removeHeads > 0 {
            let candidates = problem.prunedLayers.flatMap { l in
                problem.units[l].enumerated().map { (score: $1.standardised, id: (l, $0)) }
            }
            if !candidates.isEmpty {
                removeLowest(candidates, count: o.removeHeads) { selection.keepUnit[$0.0][$0.1] = false }
                for l in problem.prunedLayers { selection.keepMinimumAttention(l, problem) }
                removedCost = problem.prunedLayers.reduce(0) { $0 + selection.removedAttentionCost($1, problem) }
            }
        }
        if o.pruneMLP {
            let n = Int(floor((o.ratio * Double(problem.totalParameters) - Double(removedCost)) / problem.channelWeightCost))
            let candidates = problem.prunedLayers.flatMap { l in
                problem.mlpStandardised[l].enumerated().map { (score: $1, id: (l, $0)) }
            }
            removeLowest(candidates, count: n) { selection.keepChannel[$0.0][$0.1] = false }
        }
        return selection
    }

    /// AL-AM: every unit and channel of the pruned layers in one list by standardised score,
    /// highest first, each weighted by its cost in channel-weight units; the threshold is the
    /// score where the cumulative weight comes closest to (all weight) − P·(all parameters).
    static func adaptiveLayersAdaptiveModules(_ problem: AllocationProblem) -> Selection {
        var selection = Selection(problem)
        let o = problem.options, unitCost = problem.channelWeightCost
        var all: [(score: Double, weight: Double, attention: Bool, l: Int, i: Int)] = []
        for l in problem.prunedLayers {
            if o.pruneAttention {
                for (i, u) in problem.units[l].enumerated() { all.append((u.standardised, Double(u.cost) / unitCost, true, l, i)) }
            }
            if o.pruneMLP {
                let w = Double(problem.shapes[l].channelCost) / unitCost
                for (j, score) in problem.mlpStandardised[l].enumerated() { all.append((score, w, false, l, j)) }
            }
        }
        guard !all.isEmpty else { return selection }
        all.sort { a, b in
            if a.score != b.score { return a.score > b.score }
            if a.attention != b.attention { return a.attention }
            if a.l != b.l { return a.l < b.l }
            return a.i < b.i
        }
        let totalWeight = all.reduce(0) { $0 + $1.weight }
        let target = totalWeight - o.ratio * Double(problem.totalParameters) / unitCost
        var cumulative = 0.0, best = 0, bestGap = Double.infinity
        for (k, u) in all.enumerated() {
            cumulative += u.weight
            let gap = abs(cumulative - target)
            if gap < bestGap { bestGap = gap; best = k }
        }
        let threshold = all[best].score
        for u in all where !(u.score > threshold) {
            if u.attention { selection.keepUnit[u.l][u.i] = false } else { selection.keepChannel[u.l][u.i] = false }
        }
        return selection
    }

    /// CFSP's budgets (MLP only): the fraction the MLP of the pruned layers must lose,
    /// redistributed by a sigmoid of each block's angular sum (slope --angular-a, rescaled by
    /// 1/1.05 when a block would lose more than all), each block then keeping its best channels
    /// (a multiple of --round K when given, as cuda_friendly rounds).
    static func angularBlockBudgets(_ problem: AllocationProblem) throws -> Selection {
        var selection = Selection(problem)
        let o = problem.options
        guard !o.pruneAttention else { throw AllocationError("--blocks angular prunes the MLP only: use --prune mlp") }
        let layers = problem.prunedLayers.filter { problem.shapes[$0].F > 0 }
        let mlpParameters = layers.reduce(0) { $0 + problem.shapes[$1].F * problem.shapes[$1].channelCost }
        guard mlpParameters > 0 else { throw AllocationError("no MLP channels to prune") }
        let mlpFraction = o.ratio * Double(problem.totalParameters) / Double(mlpParameters)
        guard mlpFraction < 1 else { throw AllocationError("ratio \(o.ratio) needs more than all MLP channels of the pruned layers") }
        var s = layers.map { problem.angular[$0] }
        let mid = s.reduce(0, +) / Double(s.count)
        s = s.map { 1 / (1 + exp(-(($0 - mid) / 1e4) * o.angularA)) }
        var average = s.reduce(0, +) / Double(s.count)
        let largest = s.max()!
        if largest / average * (1 - mlpFraction) >= 1 {
            let scale = (average * (1 / (1 - mlpFraction) - 1)) / (largest - average) / 1.05
            s = s.map { average + ($0 - average) * scale }
            average = s.reduce(0, +) / Double(s.count)
        }
        for (i, l) in layers.enumerated() {
            let F = problem.shapes[l].F
            let keptFraction = s[i] / average * (1 - mlpFraction)
            var index: Int
            if let K = o.round {
                index = Int((Double(F) * keptFraction + Double(K / 2)) / Double(K)) * K - 1
                if index < 0 { index = min(K, F) - 1 }  // at least K (Python's −1 would keep all)
            } else {
                index = Int(Double(F) * keptFraction)
            }
            index = max(0, min(index, F - 1))
            let t = problem.mlp[l].sorted(by: >)[index]
            selection.keepChannel[l] = problem.mlp[l].map { $0 >= t }
        }
        return selection
    }

    /// `--widths PLAN`: layer l keeps as many MLP channels, and attention units of the unit asked,
    /// as PLAN's layer l (KV groups: its KV heads; head slices: its heads per KV head; value
    /// dimensions: its value rows), the best by these scores (ties: lower index first).
    static func fixedWidths(_ problem: AllocationProblem) throws -> Selection {
        var selection = Selection(problem)
        let o = problem.options, plans = o.widths!
        guard plans.count == problem.layerCount else {
            throw AllocationError("--widths: the plan has \(plans.count) layers, the model \(problem.layerCount)")
        }
        for l in problem.prunedLayers {
            let s = problem.shapes[l], p = plans[l]
            if o.pruneMLP {
                guard p.keptChannels.count <= s.F else {
                    throw AllocationError("--widths: layer \(l) of the plan keeps \(p.keptChannels.count) MLP channels, the model has \(s.F)")
                }
                selection.keepChannel[l] = best(problem.mlp[l], count: p.keptChannels.count)
            }
            let units = problem.units[l]
            if o.pruneAttention && !units.isEmpty {
                let kept: Int
                switch s.group == 1 && o.attentionUnit == .head ? .group : o.attentionUnit {
                case .group: kept = p.keptKVHeads.count
                case .head: kept = s.Hkv > 0 ? p.keptHeads.count / s.Hkv : 0
                case .vo: kept = p.keptValueRows(s.valueWidths).count
                }
                guard kept <= units.count else {
                    throw AllocationError("--widths: layer \(l) of the plan keeps \(kept) attention units (\(o.attentionUnit.rawValue)), the model has \(units.count)")
                }
                selection.keepUnit[l] = best(units.map(\.raw), count: kept)
            }
        }
        return selection
    }

    // MARK: Rounding, minimum, plan

    /// --round K (structures only: the angular budgets round themselves) and --min-keep, per
    /// pruned layer.
    static func roundAndKeepMinimum(_ selection: inout Selection, _ problem: AllocationProblem) {
        let o = problem.options
        for l in problem.prunedLayers {
            let F = problem.shapes[l].F
            if let K = o.round, !o.angularBlocks, o.widths == nil, o.pruneMLP, F > 0 {
                let k = selection.keepChannel[l].filter { $0 }.count
                if k > 0 {
                    let rounded = min(F, max(K, Int((Double(k) / Double(K)).rounded(.toNearestOrAwayFromZero)) * K))
                    selection.keepChannel[l] = best(problem.mlp[l], count: rounded)
                }
            }
            if o.pruneMLP, F > 0, selection.keepChannel[l].filter({ $0 }).count < min(o.minKeep, F) {
                selection.keepChannel[l] = best(problem.mlp[l], count: min(o.minKeep, F))
            }
            if o.pruneAttention { selection.keepMinimumAttention(l, problem) }
        }
    }

    /// The kept indices per layer and the fraction removed, counted from the shapes the plan
    /// leaves (a KV head whose value dimensions all go takes its query heads and keys along).
    static func assemblePlan(_ selection: Selection, _ problem: AllocationProblem) -> Plan {
        let byValue = problem.options.attentionUnit == .vo
        var plans: [LayerPlan] = []
        var removed = 0
        for (l, s) in problem.shapes.enumerated() {
            let units = problem.units[l]
            var plan = LayerPlan(keptHeads: Array(0..<s.H), keptKVHeads: Array(0..<s.Hkv),
                                 keptChannels: (0..<s.F).filter { selection.keepChannel[l][$0] },
                                 keptValueDims: byValue ? Array(0..<s.valueRows) : nil)
            if !units.isEmpty {
                let kept = zip(units, selection.keepUnit[l]).filter(\.1).map(\.0)
                if byValue {
                    plan.keptValueDims = kept.flatMap(\.valueRows).sorted()
                    let widths = plan.keptValueWidths(s.valueWidths)  // of every KV head, still all kept
                    plan.keptKVHeads = (0..<s.Hkv).filter { widths[$0] > 0 }
                    plan.keptHeads = plan.keptKVHeads.flatMap { k in (k * s.group)..<((k + 1) * s.group) }
                } else {
                    plan.keptHeads = kept.flatMap(\.heads).sorted()
                    plan.keptKVHeads = Set(plan.keptHeads.map { $0 / s.group }).sorted()
                }
            }
            removed += s.parameters - s.kept(plan).parameters
            plans.append(plan)
        }
        let total = problem.totalParameters
        return Plan(layers: plans, achieved: total > 0 ? Double(removed) / Double(total) : 0, totalParameters: total,
                    removedParameters: removed)
    }

    /// The `count` best-scored entries (ties: lower index first).
    package static func best(_ scores: [Double], count: Int) -> [Bool] {
        let order = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        var keep = [Bool](repeating: false, count: scores.count)
        for i in order.prefix(count) { keep[i] = true }
        return keep
    }

    /// (x − mean) / std over the vector (unbiased std, as torch.std); zeros when std is 0.
    package static func standardise(_ x: [Double]) -> [Double] {
        guard x.count > 1 else { return x.map { _ in 0 } }
        let mean = x.reduce(0, +) / Double(x.count)
        let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(x.count - 1)
        let std = variance.squareRoot()
        return std > 0 ? x.map { ($0 - mean) / std } : x.map { _ in 0 }
    }
}
