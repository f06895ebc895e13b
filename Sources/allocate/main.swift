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
            (adaptive across layers, standardised scores, cost-weighted global threshold); --blocks \
            angular for CFSP's budget per block; or --widths PLAN for another plan's per-layer widths \
            (the units chosen by these scores). docs/DESIGN.md ("The plan") states every rule. The \
            per-layer table goes to standard error (not with --quiet).

            Example:
              allocate --scores scores.st.zst --ratio 0.2 --structure AL-AM -o plan.st.zst
            """)

    @Option(name: .long, help: "Scores (score).")
    var scores: String

    @OptionGroup var budget: AllocationArguments

    @Option(name: .long, help: "Per-block budgets: angular (CFSP; MLP only).")
    var blocks: String?

    @Option(name: .long, help: "CFSP's sigmoid slope a for --blocks angular.")
    var angularA: Double = 1

    @Option(name: .long, help: "Also draw the plan as an SVG bar chart.")
    var plot: String?

    @OptionGroup var output: OutputOption
    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard budget.ratio != nil else { throw ValidationError("--ratio is required") }
        guard angularA.isFinite else { throw ValidationError("--angular-a must be a finite number") }
        guard [budget.structure, blocks, budget.widths].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --structure, --blocks and --widths")
        }
    }

    func run() throws {
        try runTool("allocate", common) {
            try output.checkBinary()
            let file = try ScoresFile(path: scores)
            let options = try AllocationOptions(
                ratio: budget.ratio!, structure: budget.structure, blocks: blocks, angularA: angularA,
                attentionUnit: budget.attentionUnit, prune: budget.prune, layers: budget.layers, round: budget.round,
                minKeep: budget.minKeep, removeHeads: budget.removeHeads,
                hasAttentionScores: file.hasAttention, layerCount: file.config.numLayers, widths: try budget.widths.map { try PlanFile(path: $0).layers })
            var (plan, planFile) = try Allocation.plan(file, options: options)
            try budget.checkAchieved(plan.achieved)
            if let plot {  // before the plan is written: an unwritable chart leaves nothing behind
                let folder = (plot as NSString).deletingLastPathComponent
                var isDirectory: ObjCBool = false
                guard folder.isEmpty || (FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory) && isDirectory.boolValue) else {
                    throw UsageError("--plot \(plot): no such directory \(folder)")
                }
            }
            planFile.metadata.merge(standardMetadata(tool: "allocate")) { $1 }
            try planFile.write(to: output.output)
            if let plot { try writeText(PlanPlot.svg(plan, shapes: file.shapes), to: plot) }
            if !common.quiet { printError(PlanPlot.table(plan, shapes: file.shapes, ratio: budget.ratio!)) }
        }
    }
}

Allocate.runAsTool()
