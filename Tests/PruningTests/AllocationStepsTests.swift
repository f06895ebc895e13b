import Foundation
import LlamaModel
import Pruning
import TensorIO
import TestSupport
import XCTest

/// Allocation's named steps on their own (docs/DESIGN.md "The plan"): the units and their exact
/// costs, the aggregation of channel scores into unit scores, FLAP's per-layer rule, the global
/// removal of the lowest, rounding and the minimum kept.
final class AllocationStepsTests: XCTestCase {
    func scores(_ name: String) throws -> ScoresFile { try ScoresFile(path: Fixtures.url("allocate/\(name)").path) }

    /// Every kind of unit partitions what it may remove: group units cover every q/k/v row and o
    /// column (and q/k/v bias entries) once; head slices every query head once, the K/V of every
    /// group once; V/O units every value row once, with its o columns.
    func testUnitsPartitionTheLayerAndCostWhatTheyRemove() throws {
        for name in ["smollm2_flap_scores.safetensors", "tiny_nonuniform_wanda_scores.safetensors"] {
            let file = try scores(name)
            for (l, s) in file.shapes.enumerated() where s.H > 0 {
                let a = file.attention[l]!
                // Everything attention holds but the o_proj bias, which stays whatever goes.
                let attention = s.parameters - (s.F * s.channelCost + s.C * s.has(.down)) - s.C * s.has(.o)
                let groups = AttentionUnits.build(shape: s, channelScores: a, unit: .group)
                XCTAssertEqual(groups.count, s.Hkv)
                XCTAssertEqual(groups.map(\.cost).reduce(0, +), attention, "\(name) layer \(l) groups")
                XCTAssertEqual(groups.flatMap(\.heads).sorted(), Array(0..<s.H))
                let slices = AttentionUnits.build(shape: s, channelScores: a, unit: .head)
                XCTAssertEqual(slices.map(\.cost).reduce(0, +), attention, "\(name) layer \(l) head slices")
                XCTAssertEqual(slices.flatMap(\.heads).sorted(), Array(0..<s.H))
                for slice in slices { XCTAssertEqual(Set(slice.heads.map { $0 / s.group }).count, min(s.Hkv, slice.heads.count)) }
                let values = AttentionUnits.build(shape: s, channelScores: a, unit: .vo)
                XCTAssertEqual(values.flatMap(\.valueRows).sorted(), Array(0..<s.valueRows))
                XCTAssertEqual(values.map(\.cost).reduce(0, +), s.valueRows * (s.C + s.has(.v)) + s.C * s.group * s.valueRows)
            }
        }
    }

    /// A head's raw score is the sum of its o_proj columns' channel scores; a group's the sum of
    /// its heads'; standardised scores are means of the layer-standardised channel scores.
    func testHeadScoresAggregateTheirChannels() throws {
        let file = try scores("smollm2_flap_scores.safetensors")
        let s = file.shapes[3], a = file.attention[3]!
        let head = HeadScores(shape: s, channelScores: a)
        let D = s.D
        for h in 0..<s.H {
            XCTAssertEqual(head.raw(h), a[h * D..<(h + 1) * D].reduce(0, +), accuracy: 1e-9 * abs(head.raw(h)))
        }
        let z = Allocation.standardise(a)
        XCTAssertEqual(z.reduce(0, +), 0, accuracy: 1e-9 * Double(z.count))
        XCTAssertEqual(head.standardised(2), z[2 * D..<3 * D].reduce(0, +) / Double(D), accuracy: 1e-12)
        let groups = AttentionUnits.build(shape: s, channelScores: a, unit: .group)
        for (k, g) in groups.enumerated() {
            let heads = Array(k * s.group..<(k + 1) * s.group)
            XCTAssertEqual(g.raw, heads.map(head.raw).reduce(0, +), accuracy: 1e-9 * abs(g.raw))
        }
    }

    /// FLAP's per-layer rule keeps every score ≥ the index-th lowest (ties stay), all go past the
    /// end; the global rule removes everything at or below the count-th lowest.
    func testThresholdRules() {
        XCTAssertEqual(Allocation.keepAtLeast([3, 1, 2, 1, 5], removing: 2), [true, false, true, false, true])
        // Ties at the threshold stay: removing one of two equal lowest removes neither.
        XCTAssertEqual(Allocation.keepAtLeast([3, 1, 2, 1, 5], removing: 1), [true, true, true, true, true])
        XCTAssertEqual(Allocation.keepAtLeast([3, 1, 2], removing: 0), [true, true, true])
        XCTAssertEqual(Allocation.keepAtLeast([3, 1, 2], removing: 3), [false, false, false])
        var removed: [Int] = []
        Allocation.removeLowest([(4, 0), (1, 1), (2, 2), (1, 3), (9, 4)], count: 3) { removed.append($0) }
        XCTAssertEqual(removed.sorted(), [1, 2, 3])
        removed = []
        Allocation.removeLowest([(4, 0), (1, 1), (2, 2)], count: 1) { removed.append($0) }
        XCTAssertEqual(removed, [1])
        XCTAssertEqual(Allocation.best([0.5, 2, 2, 1], count: 2), [false, true, true, false])
    }

    /// UL-UM removes the same share of every pruned kind in each layer, whatever the scores (here
    /// the MLP alone gives up the layer's P: P·(layer parameters)/(MLP parameters) of it); --round
    /// keeps a multiple of K channels; --min-keep holds when the ratio would take everything.
    func testUniformStructureRoundingAndMinimum() throws {
        let file = try scores("smollm2_flap_scores.safetensors")
        var o = AllocationOptions(ratio: 0.3, structure: .ulum)
        o.pruneAttention = false
        let plan = try Allocation.plan(file, options: o).plan
        XCTAssertEqual(Set(plan.layers.map(\.keptChannels.count)).count, 1)
        let s = file.shapes[0]
        let fraction = 0.3 * Double(s.parameters) / Double(s.F * s.channelCost + s.C * s.has(.down))
        XCTAssertEqual(plan.layers[0].keptChannels.count, s.F - Int(fraction * Double(s.F)))
        o.round = 64
        for p in try Allocation.plan(file, options: o).plan.layers { XCTAssertEqual(p.keptChannels.count % 64, 0) }
        o = AllocationOptions(ratio: 0.95, structure: .alam)
        o.minKeep = 2
        for (p, s) in zip(try Allocation.plan(file, options: o).plan.layers, file.shapes) {
            XCTAssertGreaterThanOrEqual(p.keptChannels.count, 2)
            XCTAssertGreaterThanOrEqual(p.keptKVHeads.count, min(2, s.Hkv))
        }
    }
}
