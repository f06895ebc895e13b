import Calibration
import Foundation
import LlamaModel
import Pruning
import TensorIO
import TestSupport
import XCTest

/// Plans against an independent numpy implementation of docs/DESIGN.md "The plan", written from
/// FLAP's and CFSP's code (scripts/reference/allocate_reference.py): identical kept index sets.
final class AllocationTests: XCTestCase {
    struct Inputs {
        var shapes: [LayerShape]
        var attention: [[Double]?]
        var mlp: [[Double]]
        var angular: [Double]
    }

    func inputs(_ name: String) throws -> Inputs {
        let file = try TensorFile(path: Fixtures.url("allocate/\(name)").path)
        let config = try LlamaConfig.fromJSON(file.metadata["config"]!)
        let biases = try JSONSerialization.jsonObject(with: Data(file.metadata["biases"]!.utf8)) as! [[String]]
        var r = Inputs(shapes: [], attention: [], mlp: [], angular: [])
        for l in 0..<config.numLayers {
            let set = Set(Projection.allCases.filter { biases[l].contains(String($0.rawValue.split(separator: ".").last!)) })
            r.shapes.append(LayerShape(config: config, layer: l, biases: set))
            r.attention.append(file.header.entry(ScoreNames.attention(l)) == nil ? nil : try file.doubles(ScoreNames.attention(l)))
            r.mlp.append(try file.doubles(ScoreNames.mlp(l)))
            r.angular.append(try file.doubles(StatNames.block(l, .angularSum))[0])
        }
        return r
    }

    func allocate(_ i: Inputs, _ o: AllocationOptions) throws -> Plan {
        try Allocation.allocate(shapes: i.shapes, attention: i.attention, mlp: i.mlp, angular: i.angular, options: o)
    }

    func testPlansEqualTheReference() throws {
        let cases = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Fixtures.url("allocate/plans.json"))) as! [String: [String: Any]]
        XCTAssertGreaterThanOrEqual(cases.count, 22)
        for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
            let i = try inputs(c["scores"] as! String)
            let a = c["args"] as! [String: Any]
            var o = AllocationOptions(ratio: a["ratio"] as! Double, structure: (a["structure"] as? String).flatMap(Structure.init))
            o.angularBlocks = (a["blocks"] as? String) == "angular"
            o.attentionUnit = AttentionUnit(rawValue: a["attention_unit"] as? String ?? "group")!
            let prune = (a["prune"] as? String ?? "attention,mlp").split(separator: ",").map(String.init)
            o.pruneAttention = prune.contains("attention")
            o.pruneMLP = prune.contains("mlp")
            if let layers = a["layers"] as? String, layers != "all" {
                let p = layers.split(separator: "-").map { Int($0)! }
                o.layers = p[0]...p[1]
            }
            o.round = a["round"] as? Int
            o.angularA = a["angular_a"] as? Double ?? 1
            o.minKeep = a["min_keep"] as? Int ?? 1
            o.removeHeads = a["remove_heads"] as? Int ?? 0
            let plan = try allocate(i, o)
            let layers = c["layers"] as! [[String: [Int]]]
            XCTAssertEqual(plan.layers.count, layers.count, name)
            for (l, (ours, ref)) in zip(plan.layers, layers).enumerated() {
                XCTAssertEqual(ours.keptHeads, ref["kept_heads"], "\(name) layer \(l) heads")
                XCTAssertEqual(ours.keptKVHeads, ref["kept_kv_heads"], "\(name) layer \(l) kv heads")
                // The fixture stores kept or removed channels, whichever list is shorter.
                let kept = ref["kept_channels"] ?? {
                    let removed = Set(ref["removed_channels"]!)
                    return (0..<i.shapes[l].F).filter { !removed.contains($0) }
                }()
                XCTAssertEqual(ours.keptChannels, kept, "\(name) layer \(l) channels")
                XCTAssertEqual(ours.keptValueDims, ref["kept_value_dims"], "\(name) layer \(l) value dimensions")
            }
            XCTAssertEqual(plan.achieved, c["achieved"] as! Double, accuracy: 1e-12, name)
        }
    }

    /// P = 0 keeps everything; P near 1 keeps --min-keep; every plan is a valid GQA model (the
    /// same number of query heads in every kept group, none outside); AL-AM lands within one
    /// unit of P.
    func testEdgesAndValidity() throws {
        for name in ["smollm2_flap_scores.safetensors", "tiny_nonuniform_wanda_scores.safetensors"] {
            let i = try inputs(name)
            for structure in Structure.allCases {
                for unit in [AttentionUnit.group, .head, .vo] {
                    for ratio in [0.0, 0.2, 0.5, 0.95] {
                        var o = AllocationOptions(ratio: ratio, structure: structure)
                        o.attentionUnit = unit
                        o.removeHeads = (structure == .almm || structure == .ulmm) && ratio > 0 ? 4 : 0
                        let plan = try allocate(i, o)
                        let what = "\(name) \(structure) \(unit) \(ratio)"
                        for (l, p) in plan.layers.enumerated() {
                            let s = i.shapes[l]
                            if s.H > 0 {
                                XCTAssertGreaterThanOrEqual(p.keptKVHeads.count, 1, what)
                                let g = s.H / s.Hkv
                                XCTAssertEqual(p.keptHeads.count % p.keptKVHeads.count, 0, what)
                                for k in p.keptKVHeads {
                                    XCTAssertEqual(p.keptHeads.filter { $0 / g == k }.count, p.keptHeads.count / p.keptKVHeads.count, what)
                                }
                                XCTAssertTrue(p.keptHeads.allSatisfy { p.keptKVHeads.contains($0 / g) }, what)
                            }
                            if s.F > 0 { XCTAssertGreaterThanOrEqual(p.keptChannels.count, 1, what) }
                            if let rows = p.keptValueDims {
                                // Only rows of kept groups, and every kept group keeps some.
                                let widths = p.keptValueWidths(s.valueWidths)
                                XCTAssertEqual(widths.reduce(0, +), rows.count, what)
                                XCTAssertTrue(widths.allSatisfy { $0 > 0 }, what)
                                XCTAssertEqual(s.kept(p).parameters, s.parameters - (s.valueRows - rows.count) * s.valueDimCost
                                    - (s.Hkv - p.keptKVHeads.count) * (s.group * (s.C * s.D + s.D * s.has(.q)) + s.C * s.D + s.D * s.has(.k))
                                    - (s.F - p.keptChannels.count) * s.channelCost, what)
                            }
                            if ratio == 0 {
                                XCTAssertEqual(p.keptHeads.count, s.H, what)
                                XCTAssertEqual(p.keptChannels.count, s.F, what)
                            }
                        }
                        if structure == .alam && ratio < 0.9 {
                            // Within one unit: the largest unit is a KV group (or a last slice).
                            let unitShare = Double(i.shapes.map { $0.H > 0 ? 2 * $0.C * $0.D * ($0.H / $0.Hkv + 1) : 3 * $0.C }.max()!) / Double(plan.totalParameters)
                            // V/O units: a KV head left without values also loses its q and k rows,
                            // beyond what the budget counted.
                            let extra = unit != .vo ? 0 : zip(plan.layers, i.shapes).reduce(0) { acc, x in
                                let (p, s) = x
                                return acc + (s.Hkv - p.keptKVHeads.count) * (s.group * (s.C * s.D + s.D * s.has(.q)) + s.C * s.D + s.D * s.has(.k))
                            }
                            XCTAssertEqual(plan.achieved - Double(extra) / Double(plan.totalParameters), ratio, accuracy: unitShare, what)
                        }
                    }
                }
            }
        }
    }

    func testRefusals() throws {
        let cfsp = try inputs("smollm2_cfsp_scores.safetensors")
        XCTAssertThrowsError(try allocate(cfsp, AllocationOptions(ratio: 0.2, structure: .alam))) {
            XCTAssertTrue("\($0)".contains("--prune mlp"), "\($0)")
        }
        var o = AllocationOptions(ratio: 0.2, structure: nil)
        o.angularBlocks = true
        XCTAssertThrowsError(try allocate(cfsp, o)) { XCTAssertTrue("\($0)".contains("MLP only"), "\($0)") }
        o.pruneAttention = false
        o.ratio = 0.9
        XCTAssertThrowsError(try allocate(cfsp, o)) { XCTAssertTrue("\($0)".contains("more than all"), "\($0)") }
    }

    /// --widths: a plan's per-layer widths, the units chosen by the scores given. On the scores
    /// that made the plan, every structure's plan comes back (within a layer each keeps its best
    /// units); on other scores, the same widths with those scores' best units.
    func testFixedWidths() throws {
        for (name, structures) in [("smollm2_flap_scores.safetensors", [Structure.alam, .ulum]),
                                   ("tiny_nonuniform_wanda_scores.safetensors", [.ulum, .ulmm])] {
            let i = try inputs(name)
            for structure in structures {
                for unit in [AttentionUnit.group, .head, .vo] {
                    var o = AllocationOptions(ratio: 0.5, structure: structure)
                    o.attentionUnit = unit
                    o.removeHeads = structure == .ulmm ? 4 : 0
                    let reference = try allocate(i, o)
                    var fixed = AllocationOptions(ratio: 0.5, structure: nil)
                    fixed.attentionUnit = unit
                    fixed.widths = reference.layers
                    let what = "\(name) \(structure) \(unit)"
                    let same = try allocate(i, fixed)
                    XCTAssertEqual(same.layers, reference.layers, what)
                    XCTAssertEqual(same.achieved, reference.achieved, what)
                    XCTAssertEqual(fixed.metadata["structure"], "widths")
                    // Reversed scores: the same counts, the other end of each layer.
                    var reversed = i
                    reversed.mlp = i.mlp.map { $0.map { -$0 } }
                    reversed.attention = i.attention.map { $0?.map { -$0 } }
                    let other = try allocate(reversed, fixed)
                    for (l, (p, q)) in zip(other.layers, reference.layers).enumerated() {
                        XCTAssertEqual(p.keptChannels.count, q.keptChannels.count, "\(what) layer \(l)")
                        if unit != .vo {  // V/O: the value rows are fixed; a KV head left without any goes whole
                            XCTAssertEqual(p.keptKVHeads.count, q.keptKVHeads.count, "\(what) layer \(l)")
                            XCTAssertEqual(p.keptHeads.count, q.keptHeads.count, "\(what) layer \(l)")
                        }
                        XCTAssertEqual(p.keptValueRows(i.shapes[l].valueWidths).count,
                                       q.keptValueRows(i.shapes[l].valueWidths).count, "\(what) layer \(l)")
                        let best = Allocation.best(reversed.mlp[l], count: q.keptChannels.count)
                        XCTAssertEqual(p.keptChannels, best.indices.filter { best[$0] }, "\(what) layer \(l)")
                    }
                    if unit == .vo {
                        XCTAssertGreaterThanOrEqual(other.achieved, reference.achieved, what)
                    } else {
                        XCTAssertEqual(other.achieved, reference.achieved, accuracy: 1e-12, what)
                    }
                }
            }
        }
        // CFSP's angular budgets (MLP only) fixed, as calibrate --sequential --widths takes them.
        let cfsp = try inputs("smollm2_cfsp_scores.safetensors")
        var angular = AllocationOptions(ratio: 0.5, structure: nil)
        angular.angularBlocks = true
        angular.pruneAttention = false
        angular.round = 128
        let budgets = try allocate(cfsp, angular)
        var fixed = AllocationOptions(ratio: 0.5, structure: nil)
        fixed.pruneAttention = false
        fixed.widths = budgets.layers
        XCTAssertEqual(try allocate(cfsp, fixed).layers, budgets.layers)
        // Refused: another layer count, or more channels than the model has.
        fixed.widths = Array(budgets.layers.dropLast())
        XCTAssertThrowsError(try allocate(cfsp, fixed)) { XCTAssertTrue("\($0)".contains("the plan has 29 layers, the model 30"), "\($0)") }
        var wide = budgets.layers
        wide[3].keptChannels = Array(0..<1600)
        fixed.widths = wide
        XCTAssertThrowsError(try allocate(cfsp, fixed)) { XCTAssertTrue("\($0)".contains("layer 3 of the plan keeps 1600 MLP channels, the model has 1536"), "\($0)") }
    }
}
