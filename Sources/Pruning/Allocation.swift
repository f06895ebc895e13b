import Foundation
import Kernels
import LlamaModel

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
    /// nil with `angularBlocks`.
    public var structure: Structure?
    public var angularBlocks = false
    public var angularA = 1.0
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

public struct AllocationError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

/// An attention unit of one layer: the query heads it removes (with the K/V of groups left without
/// heads) or the value rows it removes, its cost and its scores.
struct AttentionUnitSpec {
    var heads: [Int] = []
    var valueRows: [Int] = []
    var cost: Int
    var raw: Double
    var standardised: Double
}

public enum Allocation {
    /// `channelScores[l]`: (attention [H·D] or nil, mlp [F]); `angular[l]`: block angular sums.
    public static func allocate(shapes: [LayerShape], attention: [[Double]?], mlp: [[Double]],
                                angular: [Double], options o: AllocationOptions) throws -> Plan {
        let L = shapes.count
        let pruned = (0..<L).map { l in o.layers.map { $0.contains(l) } ?? true }
        let T = shapes.map(\.parameters).reduce(0, +)
        let c0 = Double(3 * (shapes.first?.C ?? 1))
        if o.pruneAttention && attention.contains(where: { $0 == nil }) {
            throw AllocationError("the scores hold no attention scores (CFSP scores the MLP only): use --prune mlp")
        }
        // Units per layer.
        var units: [[AttentionUnitSpec]] = []
        var mlpStd: [[Double]] = []
        for l in 0..<L {
            let s = shapes[l]
            let a = attention[l] ?? []
            let aStd = standardise(a)
            mlpStd.append(standardise(mlp[l]))
            var list: [AttentionUnitSpec] = []
            if s.H > 0, !a.isEmpty {
                let g = s.group
                let layout = s.valueLayout
                func raw(_ h: Int) -> Double { layout.columns(ofHead: h).reduce(0) { $0 + a[$1] } }
                func std(_ h: Int) -> Double {
                    let r = layout.columns(ofHead: h)
                    return r.isEmpty ? 0 : r.reduce(0) { $0 + aStd[$1] } / Double(r.count)
                }
                let unit = g == 1 && o.attentionUnit == .head ? .group : o.attentionUnit
                switch unit {
                case .vo:
                    // Value dimension e of KV head k: o channel e of each of the group's heads.
                    for k in 0..<s.Hkv {
                        for e in 0..<s.valueWidths[k] {
                            let channels = (k * g..<(k + 1) * g).map { layout.columns(ofHead: $0).lowerBound + e }
                            list.append(AttentionUnitSpec(
                                valueRows: [layout.offsets[k] + e], cost: s.valueDimCost,
                                raw: channels.reduce(0) { $0 + a[$1] },
                                standardised: channels.reduce(0) { $0 + aStd[$1] } / Double(g)))
                        }
                    }
                case .group:
                    for k in 0..<s.Hkv {
                        let heads = Array(k * g..<(k + 1) * g)
                        list.append(AttentionUnitSpec(
                            heads: heads, cost: heads.reduce(0) { $0 + s.headCost($1) } + s.kvCost(k),
                            raw: heads.map(raw).reduce(0, +),
                            standardised: heads.map(std).reduce(0, +) / Double(g)))
                    }
                case .head:
                    // Each group's heads, lowest score first (lower index first among equals).
                    let orders = (0..<s.Hkv).map { k in
                        Array(k * g..<(k + 1) * g).sorted { raw($0) != raw($1) ? raw($0) < raw($1) : $0 < $1 }
                    }
                    for r in 0..<g {
                        let heads = orders.map { $0[r] }
                        list.append(AttentionUnitSpec(
                            heads: heads,
                            cost: heads.reduce(0) { $0 + s.headCost($1) }
                                + (r == g - 1 ? (0..<s.Hkv).reduce(0) { $0 + s.kvCost($1) } : 0),
                            raw: heads.map(raw).reduce(0, +),
                            standardised: heads.map(std).reduce(0, +) / Double(s.Hkv)))
                    }
                }
            }
            units.append(list)
        }
        var keepUnit = units.map { [Bool](repeating: true, count: $0.count) }
        var keepChannel = shapes.map { [Bool](repeating: true, count: $0.F) }
        let doAttention = o.pruneAttention, doMLP = o.pruneMLP

        /// FLAP's per-layer rule: ascending sort, threshold at `index`, keep ≥ (all go when the
        /// index is past the end).
        func keepAtLeast(_ scores: [Double], removing index: Int) -> [Bool] {
            guard !scores.isEmpty else { return [] }
            if index >= scores.count { return [Bool](repeating: false, count: scores.count) }
            let t = scores.sorted()[max(index, 0)]
            return scores.map { $0 >= t }
        }

        if o.ratio == 0 && o.removeHeads == 0 {
            // Nothing to remove (FLAP's AL-AM threshold would still take the lowest unit).
        } else if o.angularBlocks {
            guard !doAttention else { throw AllocationError("--blocks angular prunes the MLP only: use --prune mlp") }
            let layers = (0..<L).filter { pruned[$0] && shapes[$0].F > 0 }
            let tMLP = layers.reduce(0) { $0 + shapes[$1].F * shapes[$1].channelCost }
            guard tMLP > 0 else { throw AllocationError("no MLP channels to prune") }
            let q = o.ratio * Double(T) / Double(tMLP)
            guard q < 1 else { throw AllocationError("ratio \(o.ratio) needs more than all MLP channels of the pruned layers") }
            var s = layers.map { angular[$0] }
            let mid = s.reduce(0, +) / Double(s.count)
            s = s.map { 1 / (1 + exp(-(($0 - mid) / 1e4) * o.angularA)) }
            var avg = s.reduce(0, +) / Double(s.count)
            let mx = s.max()!
            if mx / avg * (1 - q) >= 1 {
                let scale = (avg * (1 / (1 - q) - 1)) / (mx - avg) / 1.05
                s = s.map { avg + ($0 - avg) * scale }
                avg = s.reduce(0, +) / Double(s.count)
            }
            for (i, l) in layers.enumerated() {
                let F = shapes[l].F
                let r = s[i] / avg * (1 - q)
                var index: Int
                if let K = o.round {
                    index = Int((Double(F) * r + Double(K / 2)) / Double(K)) * K - 1
                    if index < 0 { index = min(K, F) - 1 }  // at least K (Python's −1 would keep all)
                } else {
                    index = Int(Double(F) * r)
                }
                index = max(0, min(index, F - 1))
                let t = mlp[l].sorted(by: >)[index]
                keepChannel[l] = mlp[l].map { $0 >= t }
            }
        } else if let structure = o.structure {
            let prunedLayers = (0..<L).filter { pruned[$0] }
            // Layers left whole make the pruned ones remove more: P' = P·T / T_pruned (over the
            // pruned layers that hold a pruned kind).
            let active = prunedLayers.filter { (doAttention && !units[$0].isEmpty) || (doMLP && shapes[$0].F > 0) }
            let tActive = active.reduce(0) { $0 + shapes[$1].parameters }
            let perLayerRatio = tActive == T || tActive == 0 ? o.ratio : o.ratio * Double(T) / Double(tActive)
            /// Attention min-keep, applied before an MM structure budgets the MLP with what attention removed.
            func minKeepAttention(_ l: Int) {
                let U = units[l].count
                if U > 0, keepUnit[l].filter({ $0 }).count < min(o.minKeep, U) {
                    keepUnit[l] = best(units[l].map(\.raw), count: min(o.minKeep, U))
                }
            }
            func removedAttentionCost(_ l: Int) -> Int {
                zip(units[l], keepUnit[l]).reduce(0) { $0 + ($1.1 ? 0 : $1.0.cost) }
            }
            switch structure {
            case .ulum:
                for l in prunedLayers {
                    let s = shapes[l]
                    // A kind's parameters in the layer (with its o_proj or down_proj bias, so that
                    // q = P when every kind is pruned; V/O units cannot remove q and k).
                    let aCost = units[l].isEmpty ? 0 : units[l].reduce(0) { $0 + $1.cost } + s.C * s.has(.o)
                    let mCost = s.F == 0 ? 0 : s.F * s.channelCost + s.C * s.has(.down)
                    let kinds = (doAttention ? aCost : 0) + (doMLP ? mCost : 0)
                    guard kinds > 0 else { continue }
                    let q = min(1, perLayerRatio * Double(s.parameters) / Double(kinds))
                    if doAttention {
                        keepUnit[l] = keepAtLeast(units[l].map(\.raw), removing: Int(q * Double(units[l].count)))
                    }
                    if doMLP { keepChannel[l] = keepAtLeast(mlp[l], removing: Int(q * Double(s.F))) }
                }
            case .ulmm:
                let r = prunedLayers.isEmpty ? 0 : o.removeHeads / prunedLayers.count
                for l in prunedLayers {
                    let s = shapes[l]
                    var removedCost = 0
                    if doAttention && !units[l].isEmpty {
                        keepUnit[l] = keepAtLeast(units[l].map(\.raw), removing: r)
                        minKeepAttention(l)
                        removedCost = removedAttentionCost(l)
                    }
                    if doMLP {
                        let n = Int(floor((perLayerRatio * Double(s.parameters) - Double(removedCost)) / Double(s.channelCost)))
                        keepChannel[l] = keepAtLeast(mlp[l], removing: max(0, n))
                    }
                }
            case .almm:
                var removedCost = 0
                if doAttention && o.removeHeads > 0 {
                    var all: [(score: Double, l: Int, i: Int)] = []
                    for l in prunedLayers { for (i, u) in units[l].enumerated() { all.append((u.standardised, l, i)) } }
                    if !all.isEmpty {
                        let sorted = all.map(\.score).sorted(by: >)
                        let t = sorted[max(0, sorted.count - o.removeHeads)]
                        for (score, l, i) in all where !(score > t) {
                            keepUnit[l][i] = false
                        }
                        for l in prunedLayers { minKeepAttention(l) }
                        removedCost = prunedLayers.reduce(0) { $0 + removedAttentionCost($1) }
                    }
                }
                if doMLP {
                    let n = Int(floor((o.ratio * Double(T) - Double(removedCost)) / c0))
                    var all: [(score: Double, l: Int, j: Int)] = []
                    for l in prunedLayers { for j in 0..<shapes[l].F { all.append((mlpStd[l][j], l, j)) } }
                    if n > 0, !all.isEmpty {
                        let sorted = all.map(\.score).sorted(by: >)
                        let t = sorted[max(0, sorted.count - min(n, sorted.count))]
                        for (score, l, j) in all where !(score > t) { keepChannel[l][j] = false }
                    }
                }
            case .alam:
                var all: [(score: Double, weight: Double, attention: Bool, l: Int, i: Int)] = []
                for l in prunedLayers {
                    if doAttention {
                        for (i, u) in units[l].enumerated() { all.append((u.standardised, Double(u.cost) / c0, true, l, i)) }
                    }
                    if doMLP {
                        let w = Double(shapes[l].channelCost) / c0
                        for j in 0..<shapes[l].F { all.append((mlpStd[l][j], w, false, l, j)) }
                    }
                }
                guard !all.isEmpty else { break }
                all.sort { a, b in
                    if a.score != b.score { return a.score > b.score }
                    if a.attention != b.attention { return a.attention }
                    if a.l != b.l { return a.l < b.l }
                    return a.i < b.i
                }
                let W = all.reduce(0) { $0 + $1.weight }
                let target = W - o.ratio * Double(T) / c0
                var cumulative = 0.0, best = 0, bestGap = Double.infinity
                for (k, u) in all.enumerated() {
                    cumulative += u.weight
                    let gap = abs(cumulative - target)
                    if gap < bestGap { bestGap = gap; best = k }
                }
                let t = all[best].score
                for u in all where !(u.score > t) {
                    if u.attention { keepUnit[u.l][u.i] = false } else { keepChannel[u.l][u.i] = false }
                }
            }
        } else {
            throw AllocationError("give --structure or --blocks angular")
        }

        // Rounding and the minimum kept.
        for l in 0..<L where pruned[l] {
            let F = shapes[l].F
            if let K = o.round, !o.angularBlocks, doMLP, F > 0 {
                let k = keepChannel[l].filter { $0 }.count
                if k > 0 {
                    let rounded = min(F, max(K, Int((Double(k) / Double(K)).rounded(.toNearestOrAwayFromZero)) * K))
                    keepChannel[l] = best(mlp[l], count: rounded)
                }
            }
            if doMLP, F > 0, keepChannel[l].filter({ $0 }).count < min(o.minKeep, F) {
                keepChannel[l] = best(mlp[l], count: min(o.minKeep, F))
            }
            let U = units[l].count
            if doAttention, U > 0, keepUnit[l].filter({ $0 }).count < min(o.minKeep, U) {
                keepUnit[l] = best(units[l].map(\.raw), count: min(o.minKeep, U))
            }
        }

        // The plan and its cost (from the shapes it leaves: a KV head whose value dimensions all
        // go takes its query heads and keys along).
        var plans: [LayerPlan] = []
        var removed = 0
        for l in 0..<L {
            let s = shapes[l]
            var plan = LayerPlan(keptHeads: Array(0..<s.H), keptKVHeads: Array(0..<s.Hkv),
                                 keptChannels: (0..<s.F).filter { keepChannel[l][$0] },
                                 keptValueDims: o.attentionUnit == .vo ? Array(0..<s.valueRows) : nil)
            if !units[l].isEmpty {
                if o.attentionUnit == .vo {
                    plan.keptValueDims = zip(units[l], keepUnit[l]).filter(\.1).flatMap(\.0.valueRows).sorted()
                    let widths = plan.keptValueWidths(s.valueWidths)  // of every KV head, still all kept
                    plan.keptKVHeads = (0..<s.Hkv).filter { widths[$0] > 0 }
                    plan.keptHeads = plan.keptKVHeads.flatMap { k in (k * s.group)..<((k + 1) * s.group) }
                } else {
                    let heads = zip(units[l], keepUnit[l]).filter(\.1).flatMap(\.0.heads).sorted()
                    plan.keptHeads = heads
                    plan.keptKVHeads = Set(heads.map { $0 / s.group }).sorted()
                }
            }
            removed += s.parameters - s.kept(plan).parameters
            plans.append(plan)
        }
        return Plan(layers: plans, achieved: T > 0 ? Double(removed) / Double(T) : 0, totalParameters: T,
                    removedParameters: removed)
    }

    /// The `count` best-scored entries (ties: lower index first).
    static func best(_ scores: [Double], count: Int) -> [Bool] {
        let order = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
        var keep = [Bool](repeating: false, count: scores.count)
        for i in order.prefix(count) { keep[i] = true }
        return keep
    }

    /// (x − mean) / std over the vector (unbiased std, as torch.std); zeros when std is 0.
    static func standardise(_ x: [Double]) -> [Double] {
        guard x.count > 1 else { return x.map { _ in 0 } }
        let mean = x.reduce(0, +) / Double(x.count)
        let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(x.count - 1)
        let std = variance.squareRoot()
        return std > 0 ? x.map { ($0 - mean) / std } : x.map { _ in 0 }
    }
}
