import ArgumentParser
import Foundation
import Pruning
import TensorIO
import ToolSupport

struct Allocate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allocate",
        abstract: "Decide which heads, KV groups and MLP channels every layer keeps, for a ratio of parameters removed.",
        discussion: """
            --ratio P is the fraction of decoder-layer linear parameters (q, k, v, o, gate, up, down \
            weights and biases) to remove; embeddings and the head are not counted. Structures as FLAP \
            defines them: UL-UM (uniform per layer and module; Wanda-sp, FASP), UL-MM, AL-MM, AL-AM \
            (adaptive across layers, standardised scores, cost-weighted global threshold); or --blocks \
            angular for CFSP's budget per block. docs/DESIGN.md ("The plan") states every rule. The \
            per-layer table goes to standard error (not with --quiet).

            Example:
              allocate --scores scores.st.zst --ratio 0.2 --structure AL-AM -o plan.st.zst
            """)

    @Option(name: .long, help: "Scores (score).")
    var scores: String

    @Option(name: .long, help: "Fraction of decoder-layer linear parameters to remove, in [0, 1).")
    var ratio: Double

    @Option(name: .long, help: "UL-UM (also: uniform), UL-MM, AL-MM or AL-AM.")
    var structure: String?

    @Option(name: .long, help: "Per-block budgets: angular (CFSP; MLP only).")
    var blocks: String?

    @Option(name: .long, help: "CFSP's sigmoid slope a for --blocks angular.")
    var angularA: Double = 1

    @Option(name: .long, help: "Attention unit: group (a KV head with its query heads), head (one query head from every group at a time) or vo (FASP: one value dimension, a v_proj row with the o_proj columns that read it).")
    var attentionUnit: String = "group"

    @Option(name: .long, help: "Unit kinds to prune: attention, mlp or attention,mlp.")
    var prune: String?

    @Option(name: .long, help: "Prune only layers A-B (inclusive, from 0).")
    var layers: String?

    @Option(name: .long, help: "Keep a multiple of K MLP channels per layer.")
    var round: Int?

    @Option(name: .long, help: "Every pruned layer keeps at least this many attention units and MLP channels.")
    var minKeep: Int = 1

    @Option(name: .long, help: "Attention units to remove for UL-MM and AL-MM (FLAP's remove_heads).")
    var removeHeads: Int = 0

    @Option(name: .long, help: "Also draw the plan as an SVG bar chart.")
    var plot: String?

    @OptionGroup var output: OutputOption
    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard ratio >= 0, ratio < 1 else { throw ValidationError("--ratio must be in [0, 1)") }
        guard (structure == nil) != (blocks == nil) else {
            throw ValidationError("give exactly one of --structure and --blocks")
        }
        if let round, round < 1 { throw ValidationError("--round must be at least 1") }
        if minKeep < 0 || removeHeads < 0 { throw ValidationError("--min-keep and --remove-heads must not be negative") }
    }

    func run() throws {
        try runTool("allocate", common) {
            try output.checkBinary()
            let file = try ScoresFile(path: scores)
            let options = try AllocationOptions(
                ratio: ratio, structure: structure, blocks: blocks, angularA: angularA, attentionUnit: attentionUnit,
                prune: prune, layers: layers, round: round, minKeep: minKeep, removeHeads: removeHeads,
                hasAttentionScores: file.hasAttention, layerCount: file.config.numLayers)
            var (plan, planFile) = try Allocation.plan(file, options: options)
            planFile.metadata.merge(standardMetadata(tool: "allocate")) { $1 }
            try planFile.write(to: output.output)
            if let plot { try writeText(PlanPlot.svg(plan, shapes: file.shapes), to: plot) }
            if !common.quiet { printError(PlanPlot.table(plan, shapes: file.shapes, ratio: ratio)) }
        }
    }
}

Allocate.main()
