import Foundation
import Kernels

// Allocation's first two steps: the prunable attention units of a layer with their exact costs,
// and their scores aggregated from the o_proj input channel scores (docs/DESIGN.md "The plan").
// A head owns the o_proj columns of its values (`ValueLayout`); its raw score is the sum of their
// channel scores (FLAP sums per head within a layer) and its standardised score the mean of their
// standardised channel scores (FLAP standardises over the layer before comparing across layers).

/// An attention unit of one layer: the query heads it removes (with the K/V of groups left
/// without heads) or the value rows it removes, its cost in parameters and its two scores.
package struct AttentionUnitSpec {
    package var heads: [Int] = []
    package var valueRows: [Int] = []
    package var cost: Int
    package var raw: Double
    package var standardised: Double
}

/// Channel scores of one layer's o_proj input, aggregated per head.
package struct HeadScores {
    let layout: ValueLayout
    let channel: [Double]
    let standardisedChannel: [Double]

    package init(shape s: LayerShape, channelScores a: [Double]) {
        layout = s.valueLayout
        channel = a
        standardisedChannel = Allocation.standardise(a)
    }

    /// Σ of head h's channel scores.
    package func raw(_ h: Int) -> Double { layout.columns(ofHead: h).reduce(0) { $0 + channel[$1] } }

    /// Mean of head h's standardised channel scores (0 for a head without values).
    package func standardised(_ h: Int) -> Double {
        let r = layout.columns(ofHead: h)
        return r.isEmpty ? 0 : r.reduce(0) { $0 + standardisedChannel[$1] } / Double(r.count)
    }
}

package enum AttentionUnits {
    /// The units of a layer with channel scores `a` (none for a layer without heads or scores).
    package static func build(shape s: LayerShape, channelScores a: [Double], unit: AttentionUnit) -> [AttentionUnitSpec] {
        guard s.H > 0, !a.isEmpty else { return [] }
        let scores = HeadScores(shape: s, channelScores: a)
        // With one query head per KV head, a head slice is a group.
        switch s.group == 1 && unit == .head ? .group : unit {
        case .vo: return valueDimensions(s, scores)
        case .group: return groups(s, scores)
        case .head: return headSlices(s, scores)
        }
    }

    /// FASP's V/O units: value dimension e of KV head k is v row e of k and o channel e of each of
    /// the group's heads.
    static func valueDimensions(_ s: LayerShape, _ scores: HeadScores) -> [AttentionUnitSpec] {
        let g = s.group, layout = scores.layout
        var units: [AttentionUnitSpec] = []
        for k in 0..<s.Hkv {
            for e in 0..<s.valueWidths[k] {
                let channels = (k * g..<(k + 1) * g).map { layout.columns(ofHead: $0).lowerBound + e }
                units.append(AttentionUnitSpec(
                    valueRows: [layout.offsets[k] + e], cost: s.valueDimCost,
                    raw: channels.reduce(0) { $0 + scores.channel[$1] },
                    standardised: channels.reduce(0) { $0 + scores.standardisedChannel[$1] } / Double(g)))
            }
        }
        return units
    }

    /// A KV head with its query heads.
    static func groups(_ s: LayerShape, _ scores: HeadScores) -> [AttentionUnitSpec] {
        let g = s.group
        return (0..<s.Hkv).map { k in
            let heads = Array(k * g..<(k + 1) * g)
            return AttentionUnitSpec(
                heads: heads, cost: heads.reduce(0) { $0 + s.headCost($1) } + s.kvCost(k),
                raw: heads.map(scores.raw).reduce(0, +),
                standardised: heads.map(scores.standardised).reduce(0, +) / Double(g))
        }
    }

    /// Slice r takes the r-th lowest-scored query head of every group (lower index first among
    /// equals), so that every group keeps as many heads; the last slice also takes K and V.
    static func headSlices(_ s: LayerShape, _ scores: HeadScores) -> [AttentionUnitSpec] {
        let g = s.group
        let orders = (0..<s.Hkv).map { k in
            Array(k * g..<(k + 1) * g).sorted { scores.raw($0) != scores.raw($1) ? scores.raw($0) < scores.raw($1) : $0 < $1 }
        }
        return (0..<g).map { r in
            let heads = orders.map { $0[r] }
            return AttentionUnitSpec(
                heads: heads,
                cost: heads.reduce(0) { $0 + s.headCost($1) } + (r == g - 1 ? (0..<s.Hkv).reduce(0) { $0 + s.kvCost($1) } : 0),
                raw: heads.map(scores.raw).reduce(0, +),
                standardised: heads.map(scores.standardised).reduce(0, +) / Double(s.Hkv))
        }
    }
}
