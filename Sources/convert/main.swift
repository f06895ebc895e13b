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
            (uniform layer widths only); --to gguf writes a GGUF file llama.cpp runs (architecture \
            llama, or deci for per-layer widths; --dtype f32, f16 or q8_0).

            Example:
              convert SmolLM2-135M-Instruct.Q4_1.gguf -o smollm2.st.zst
              convert pruned.st.zst --to hf -o pruned-hf/
              convert pruned.st.zst --to gguf --dtype q8_0 -o pruned.gguf
            """)

    @Argument(help: "The model to convert (GGUF file, Hugging Face directory, model file or -).")
    var input: String

    @OptionGroup var output: OutputOption

    @Option(name: .long, help: "Output form: model, hf or gguf.")
    var to: String = "model"

    @Option(name: .long, help: "Weight type: auto (keep the source's float type; quantised → f32), f32, f16, bf16; for gguf: f32 (auto), f16 or q8_0.")
    var dtype: String = "auto"

    @Flag(name: .long, help: "Pad value heads narrowed by V/O pruning (FASP) with zeros to head_dim, so that transformers and llama.cpp can hold the model: the same outputs, an attention no smaller than the dense one's.")
    var padValues = false

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard ["model", "hf", "gguf"].contains(to) else {
            throw ValidationError("--to must be model, hf or gguf, not '\(to)'")
        }
        if to == "gguf" {
            guard dtype == "auto" || GGUFExportType(rawValue: dtype) != nil else {
                throw ValidationError("--dtype for gguf must be f32, f16 or q8_0, not '\(dtype)'")
            }
            return
        }
        guard WeightType(rawValue: dtype) != nil else {
            throw ValidationError("--dtype must be one of auto, f32, f16, bf16, not '\(dtype)'")
        }
    }

    func run() throws {
        try runTool("convert", common) {
            let output = self.output.output
            let weightType = WeightType(rawValue: dtype) ?? .auto
            if to == "gguf" { try checkBinaryOutput(output) }
            var model = try Model.open(input)
            if padValues { model = try model.paddingValueHeads() }
            let names = model.tensorNames
            let progress = Progress("convert", total: names.count, unit: "tensors",
                                    quiet: common.quiet)
            switch to {
            case "gguf":
                guard output != "-" else { throw UsageError("--to gguf needs a file, not -") }
                try model.exportGGUF(to: output, type: GGUFExportType(rawValue: dtype) ?? .f32) { done, total in
                    progress.update(done * names.count / max(total, 1))
                }
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

Convert.runAsTool()
