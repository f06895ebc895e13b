import ArgumentParser
import LlamaModel
import TensorIO
import ToolSupport

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a model between GGUF, Hugging Face and PruneKit model files.",
        discussion: """
            IN is a GGUF file, a Hugging Face directory (config.json, safetensors, \
            tokenizer.json) or a PruneKit model file (- for standard input).
            --to model (default) writes one PruneKit model file (.st.zst: zstd-compressed \
            safetensors with Hugging Face tensor names, the configuration and tokenizer in \
            its metadata); --to hf writes a Hugging Face directory that transformers loads \
            (uniform layer widths only).

            Example:
              convert SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2.st.zst
              convert pruned.st.zst --to hf -o pruned-hf/
            """)

    @Argument(help: "The model to convert (GGUF file, Hugging Face directory, model file or -).")
    var input: String

    @Option(name: [.short, .long], help: "Output: a model file, a directory for --to hf, or -.")
    var output: String

    @Option(name: .long, help: "Output form: model or hf.")
    var to: String = "model"

    @Option(name: .long, help: "Weight type: auto (keep the source's float type; quantised → f32), f32, f16, bf16.")
    var dtype: String = "auto"

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard ["model", "hf"].contains(to) else {
            throw ValidationError("--to must be model or hf, not '\(to)'")
        }
        guard WeightType(rawValue: dtype) != nil else {
            throw ValidationError("--dtype must be one of auto, f32, f16, bf16, not '\(dtype)'")
        }
    }

    func run() throws {
        try runToolBody("convert") {
            installInterruptCleanup()
            let weightType = WeightType(rawValue: dtype) ?? .auto
            let model = try Model.open(input)
            let names = model.tensorNames
            let progress = Progress("convert", total: names.count, unit: "tensors",
                                    quiet: common.quiet)
            switch to {
            case "hf":
                guard output != "-" else { throw UsageError("--to hf needs a directory, not -") }
                try model.exportHuggingFace(to: output, weightType: weightType) { done, _ in
                    progress.update(done)
                }
            default:
                try checkBinaryOutput(output)
                try model.write(to: output, weightType: weightType,
                                metadata: standardMetadata(tool: "convert")) { done, _ in
                    progress.update(done)
                }
            }
            progress.finish()
            if !common.quiet {
                printError("convert: \(model.totalParameters) parameters, \(model.config.numLayers) layers → \(output)")
            }
        }
    }
}

Convert.main()
