import ArgumentParser
import Foundation
import LlamaModel
import Pruning
import ToolSupport

struct Slice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slice",
        abstract: "Remove the heads, KV groups and MLP channels a plan drops: a physically smaller model.",
        discussion: """
            Layer by layer, streaming: q rows and o_proj columns of dropped query heads, k and v rows \
            of dropped KV heads, gate/up rows and down_proj columns of dropped channels (their bias \
            entries with them; o_proj and down_proj biases stay). The per-layer widths go into the \
            configuration. The plan must have been made from this model's statistics (fingerprint).

            Example:
              slice --model smollm2.st.zst --plan plan.st.zst -o sliced.st.zst
            """)

    @OptionGroup var model: ModelOption

    @Option(name: .long, help: "The plan (allocate).")
    var plan: String

    @Option(name: .long, help: "Element type of the output weights: auto (the source's), f32, f16 or bf16.")
    var dtype: String = "auto"

    @OptionGroup var output: OutputOption
    @OptionGroup var common: CommonOptions

    func run() throws {
        try runTool("slice", common) {
            try output.checkBinary()
            guard let weightType = WeightType(rawValue: dtype) else {
                throw UsageError("--dtype must be auto, f32, f16 or bf16, got '\(dtype)'")
            }
            let planFile = try PlanFile(path: plan)
            let model = try Model.open(self.model.model)
            let progress = Progress("slice", total: model.config.numLayers, unit: "layers", quiet: common.quiet)
            let (before, after) = try Slicing.write(model, plan: planFile, to: output.output, weightType: weightType,
                                                    metadata: standardMetadata(tool: "slice"), progress: progress.update)
            progress.finish()
            if !common.quiet {
                printError(String(format: "slice: %d → %d parameters (%.2f%% removed; decoder layers %.2f%%)", before, after,
                                  100 * Double(before - after) / Double(before),
                                  100 * Double(before - after) / Double(model.layerLinearParameters)))
            }
        }
    }
}

Slice.runAsTool()
