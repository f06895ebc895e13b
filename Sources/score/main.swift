import ArgumentParser
import Calibration
import Foundation
import LlamaModel
import Pruning
import ToolSupport

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Importance scores of attention and MLP channels from a model and its calibration statistics.",
        discussion: """
            Writes, per decoder layer, a score per o_proj input channel (head h owns channels h·D …; \
            for FASP each is a V/O dimension) and per MLP channel (down_proj input), and copies the \
            block angular statistics for CFSP's budgets. allocate aggregates channels into heads or \
            KV groups. The statistics must be complete (not a shard) and of this model. Metrics:
            \(ScoreMetric.allCases.map { "  \($0.rawValue): \($0.formula)" }.joined(separator: "\n"))

            Example:
              score --model smollm2.st.zst --stats stats.st.zst --metric flap -o scores.st.zst
            """)

    @OptionGroup var model: ModelOption

    @Option(name: .long, help: "Calibration statistics (calibrate).")
    var stats: String

    @Option(name: .long, help: "Metric: \(ScoreMetric.allCases.map(\.rawValue).joined(separator: ", ")).")
    var metric: String

    @Option(name: .long, help: "taylor: first (W⊙G), second (W⊙H⊙W) or mix (W⊙G − ½W⊙H⊙W); second and mix need calibrate --gradients second.")
    var order: String = "first"

    @Option(name: .long, help: "taylor: element (Σ|s| over a channel's weights) or vector (|Σ s|); hywia uses both.")
    var granularity: String = "element"

    @Option(name: .long, help: "taylor: across a unit's coupled weights: sum, mean, max, prod or first.")
    var reduce: String = "sum"

    @Option(name: .long, help: "hywia: adaptive (softmax weights over the two granularities), equal, fine or coarse.")
    var fusion: String = "adaptive"

    @Option(name: .long, help: "hywia: the softmax temperature τ of the adaptive fusion (> 0).")
    var temperature: Double = 1

    @Option(name: .long, help: "hywia: each granularity replaced by its rank in the layer, in [0, 1] (rank), or divided by its layer mean (mean) or maximum (max).")
    var normalise: String = "rank"

    @OptionGroup var output: OutputOption
    @OptionGroup var common: CommonOptions

    func run() throws {
        try runTool("score", common) {
            try output.checkBinary()
            guard let metric = ScoreMetric(rawValue: metric) else {
                throw UsageError("unknown metric '\(self.metric)' (\(ScoreMetric.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            guard let order = TaylorOptions.Order(rawValue: order),
                  let granularity = TaylorOptions.Granularity(rawValue: granularity),
                  let reduce = TaylorOptions.Reduction(rawValue: reduce)
            else {
                throw UsageError("--order must be first, second or mix; --granularity vector or element; --reduce sum, mean, max, prod or first")
            }
            guard let fusion = HyWIAOptions.Fusion(rawValue: fusion), temperature > 0, temperature.isFinite,
                  let normalisation = HyWIAOptions.Normalisation(rawValue: normalise)
            else {
                throw UsageError("--fusion must be adaptive, equal, fine or coarse, --temperature positive, --normalise mean, max or rank")
            }
            let model = try Model.open(self.model.model)
            let statsFile = try StatisticsFile(path: stats)
            let progress = Progress("score", total: model.config.numLayers, unit: "layers", quiet: common.quiet)
            try ScoresFile.write(path: output.output, model: model, stats: statsFile, metric: metric,
                                 taylor: TaylorOptions(order: order, granularity: granularity, reduce: reduce),
                                 hywia: HyWIAOptions(fusion: fusion, temperature: temperature, normalisation: normalisation), metadata: standardMetadata(tool: "score"), progress: progress.update)
            progress.finish()
        }
    }
}

Score.runAsTool()
