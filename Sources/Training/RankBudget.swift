import Foundation
import LlamaModel

/// CFSP's importance-guided recovery (IG-LoRA) as we define it — the paper gives no formula and
/// no code (docs/DESIGN.md "Fine-tuning", importance-guided ranks): every block's LoRA rank
/// follows its coarse importance, the mean angular distance between its input and output on the
/// calibration data, under the same total of adapter parameters as a uniform rank r:
///
///     r_l = r · I_l / Ī,   Ī = Σ_l I_l·c_l / Σ_l c_l   so that   Σ_l r_l·c_l = r · Σ_l c_l
///
/// where c_l is the adapter parameters one unit of rank costs in block l (Σ over its adapted
/// projections of in + out: pruned blocks are cheaper). Ranks are rounded down and kept ≥ 1 (taken
/// back from the ranks furthest above their ideal if that overspends), and the remaining budget
/// goes to the blocks with the largest remainders while it lasts.
public enum RankBudget {
    public static func importanceGuided(importance: [Double], costPerRank: [Int], rank r: Int) throws -> [Int] {
        precondition(importance.count == costPerRank.count)
        guard r > 0 else { return importance.map { _ in 0 } }
        guard importance.allSatisfy({ $0.isFinite && $0 >= 0 }), importance.contains(where: { $0 > 0 }) else {
            throw TrainingError("block importances must be finite, ≥ 0 and not all 0")
        }
        let active = costPerRank.indices.filter { costPerRank[$0] > 0 }
        let totalCost = active.reduce(0) { $0 + costPerRank[$1] }
        guard totalCost > 0 else { return importance.map { _ in 0 } }
        let budget = r * totalCost
        let mean = active.reduce(0.0) { $0 + importance[$1] * Double(costPerRank[$1]) } / Double(totalCost)
        var ranks = importance.map { _ in 0 }
        var ideal = importance.map { _ in 0.0 }
        for l in active {
            ideal[l] = Double(r) * importance[l] / mean
            ranks[l] = max(1, Int(ideal[l]))
        }
        var spent = active.reduce(0) { $0 + ranks[$1] * costPerRank[$1] }
        // The floor of 1 may overspend: take back from the ranks furthest above their ideal.
        while spent > budget, let l = active.filter({ ranks[$0] > 1 }).max(by: {
            (Double(ranks[$0]) - ideal[$0], $1) < (Double(ranks[$1]) - ideal[$1], $0)
        }) {
            ranks[l] -= 1
            spent -= costPerRank[l]
        }
        // The largest remainders first, each while it fits (ties: the earlier block).
        let order = active.sorted { (ideal[$0] - Double(ranks[$0]), $1) > (ideal[$1] - Double(ranks[$1]), $0) }
        for l in order where ideal[l] > Double(ranks[l]) && spent + costPerRank[l] <= budget {
            ranks[l] += 1
            spent += costPerRank[l]
        }
        return ranks
    }

    /// Adapter parameters per unit of rank in each layer of `config`: Σ over `targets` of
    /// in + out (0 for a projection with a zero width).
    public static func costPerRank(config: LlamaConfig, targets: [Projection]) -> [Int] {
        (0..<config.numLayers).map { l in
            targets.reduce(0) { sum, p in
                let (out, inF) = TensorNames.projectionShape(p, config: config, layer: l)
                return sum + (out > 0 && inF > 0 ? out + inF : 0)
            }
        }
    }
}
