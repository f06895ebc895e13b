import ArgumentParser
import Calibration
import Foundation
import LlamaModel
import Pruning
import ToolSupport

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Compensate o_proj and down_proj for the heads and channels slicing removed.",
        discussion: """
            --model is the sliced model (slice), --dense the model it was sliced from.
            bias (FLAP): b' = b + W[:, dropped]·mean(x[dropped]) on o_proj and down_proj.
            lsq (FASP): the kept columns refitted, W' = W·G[:, K]·(G[K, K] + λI)⁻¹, G = XᵀX of the \
            consumer's input from the statistics (calibrate --gram o_proj,down_proj), λ = --damp × mean \
            diagonal, solved by Cholesky (LAPACK).
            bias+lsq: both, by the least-squares fit with a constant input appended.
            The reconstruction error ‖WX + b − W'X_K − b'‖² over the calibration tokens is printed per \
            layer when the statistics hold Gram matrices; a layer whose fit would be worse keeps the plain slice.

            Example:
              restore --model sliced.st.zst --dense smollm2.st.zst --stats stats.st.zst --plan plan.st.zst --method bias -o pruned.st.zst
            """)

    @OptionGroup var model: ModelOption

    @Option(name: .long, help: "The dense model it was sliced from.")
    var dense: String

    @Option(name: .long, help: "Calibration statistics of the dense model.")
    var stats: String

    @Option(name: .long, help: "The plan the model was sliced with.")
    var plan: String

    @Option(name: .long, help: "bias, lsq or bias+lsq.")
    var method: String

    @Option(name: .long, help: "Ridge damping for lsq: λ = damp × mean diagonal of G[K, K].")
    var damp: Double = 0.01

    @OptionGroup var output: OutputOption
    @OptionGroup var common: CommonOptions

    func run() throws {
        try runTool("restore", common) {
            try output.checkBinary()
            guard let method = RestoreMethod(rawValue: method) else {
                throw UsageError("--method must be bias, lsq or bias+lsq, got '\(self.method)'")
            }
            guard damp >= 0 else { throw UsageError("--damp must not be negative") }
            let sliced = try Model.open(model.model)
            let denseModel = try Model.open(dense)
            let planFile = try PlanFile(path: plan)
            let statsFile = try StatisticsFile(path: stats)
            let progress = Progress("restore", total: sliced.config.numLayers, unit: "layers", quiet: common.quiet)
            let reports = try Restoration.restoreModel(
                sliced: sliced, dense: denseModel, stats: statsFile, plan: planFile, method: method, damp: damp,
                output: output.output, metadata: standardMetadata(tool: "restore"), progress: progress.update)
            progress.finish()
            if !common.quiet { Restoration.table(reports).forEach(printError) }
        }
    }
}

Restore.runAsTool()
