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

    @Option(name: .long, help: "Fraction of decoder-layer linear parameters to remove (as allocate --ratio).")
    var ratio: Double?

    @Option(name: .long, help: "UL-UM (uniform) or UL-MM (as allocate --structure).")
    var structure: String?

    @Option(name: .long, help: "group, head or vo (as allocate --attention-unit).")
    var attentionUnit: String = "group"

    @Option(name: .long, help: "attention, mlp or attention,mlp (as allocate --prune).")
    var prune: String?

    @Option(name: .long, help: "Prune only layers A-B (as allocate --layers).")
    var layers: String?

    @Option(name: .long, help: "Keep a multiple of K MLP channels per layer (as allocate --round).")
    var round: Int?

    @Option(name: .long, help: "As allocate --min-keep.")
    var minKeep: Int = 1

    @Option(name: .long, help: "As allocate --remove-heads (UL-MM).")
    var removeHeads: Int = 0

    @Option(name: .long, help: "Compensation: none, bias, lsq or bias+lsq (as restore --method).")
    var restore: String = "none"

    @Option(name: .long, help: "Least-squares damping (as restore --damp).")
    var damp: Double = 0.01

    func validate() throws {
        let recipeGiven = metric != nil || ratio != nil || structure != nil || prune != nil || layers != nil || round != nil
        guard sequential else {
            if recipeGiven || restore != "none" { throw ValidationError("--metric, --ratio, --structure, --restore and the rest of the recipe go with --sequential") }
            return
        }
        guard metric != nil, ratio != nil, structure != nil else {
            throw ValidationError("--sequential needs --metric, --ratio and --structure")
        }
        guard ratio! >= 0, ratio! < 1 else { throw ValidationError("--ratio must be in [0, 1)") }
        if let round, round < 1 { throw ValidationError("--round must be at least 1") }
        if minKeep < 0 || removeHeads < 0 { throw ValidationError("--min-keep and --remove-heads must not be negative") }
        guard damp >= 0, damp.isFinite else { throw ValidationError("--damp must be a finite number ≥ 0") }
    }

    /// The pruner of the recipe, nil without --sequential.
    func pruner(model: Model) throws -> SequentialPruner? {
        guard sequential, let metric, let ratio else { return nil }
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
            ratio: ratio, structure: structure, blocks: nil, angularA: 1, attentionUnit: attentionUnit, prune: prune,
            layers: layers, round: round, minKeep: minKeep, removeHeads: removeHeads,
            hasAttentionScores: m.scoresAttention, layerCount: model.config.numLayers)
        return SequentialPruner(model: model, recipe: try SequentialRecipe(metric: m, allocation: allocation, restore: method, damp: damp))
    }
}
