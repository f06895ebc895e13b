import ArgumentParser
import LlamaModel
import Pruning
import ToolSupport

/// The recipe of `calibrate --sequential`: score's, allocate's and restore's settings, spelled as
/// those stages spell them.
struct SequentialOptions: ParsableArguments {
    @Flag(name: .long, help: "Prune each layer as soon as its statistics are complete, and measure the next layer on the pruned outputs.")
    var sequential = false

    @Option(name: .long, help: "Score metric (as score --metric).")
    var metric: String?

    @OptionGroup(title: "The recipe's allocation (as allocate spells it)") var allocation: AllocationArguments

    @Option(name: .long, help: "Compensation: none, bias, lsq or bias+lsq (as restore --method).")
    var restore: String = "none"

    @Option(name: .long, help: "Least-squares damping (as restore --damp).")
    var damp: Double = 0.01

    func validate() throws {
        guard sequential else {
            if metric != nil || allocation.anyGiven || restore != "none" {
                throw ValidationError("--metric, --ratio, --structure, --restore and the rest of the recipe go with --sequential")
            }
            return
        }
        guard metric != nil, allocation.ratio != nil, (allocation.structure != nil) != (allocation.widths != nil) else {
            throw ValidationError("--sequential needs --metric, --ratio and one of --structure and --widths")
        }
        guard damp >= 0, damp.isFinite else { throw ValidationError("--damp must be a finite number ≥ 0") }
    }

    /// The pruner of the recipe, nil without --sequential.
    func pruner(model: Model) throws -> SequentialPruner? {
        guard sequential, let metric, let ratio = allocation.ratio else { return nil }
        guard let m = ScoreMetric(rawValue: metric) else {
            throw UsageError("--metric must be one of \(ScoreMetric.allCases.map(\.rawValue).joined(separator: ", ")), got '\(metric)'")
        }
        let method: RestoreMethod?
        if restore == "none" {
            method = nil
        } else {
            guard let r = RestoreMethod(rawValue: restore) else {
                throw UsageError("--restore must be none, \(RestoreMethod.allCases.map(\.rawValue).joined(separator: ", ")), got '\(restore)'")
            }
            method = r
        }
        let allocation = try AllocationOptions(
            ratio: ratio, structure: allocation.structure, blocks: nil, angularA: 1, attentionUnit: allocation.attentionUnit,
            prune: allocation.prune, layers: allocation.layers, round: allocation.round, minKeep: allocation.minKeep,
            removeHeads: allocation.removeHeads,
            hasAttentionScores: m.scoresAttention, layerCount: model.config.numLayers, widths: try self.allocation.widths.map { try PlanFile(path: $0).layers })
        let pruner = SequentialPruner(model: model, recipe: try SequentialRecipe(metric: m, allocation: allocation, restore: method, damp: damp))
        // As allocate refuses such a plan, before the run rather than after it.
        try self.allocation.checkAchieved(try pruner.plannedFraction())
        return pruner
    }
}
