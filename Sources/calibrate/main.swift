import ArgumentParser
import Calibration
import Foundation
import LlamaModel
import ToolSupport

struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Activation statistics of a dense model over calibration windows, in one forward pass.",
        subcommands: [Run.self, Merge.self],
        defaultSubcommand: Run.self)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the model over calibration windows and write the statistics (the default subcommand).",
        discussion: """
            Windows: --jsonl draws as GPTQ/Wanda's get_c4 does with Python's random.seed(SEED): a \
            random document of more than T tokens (tokenised as tokenizer(text) does, BOS only if the \
            tokenizer adds one), then a random T-token slice of it, repeated; when fewer documents than \
            --samples are long enough, the documents are joined by "\\n\\n" and windows are random \
            slices of that stream (as get_wikitext2 draws from its text). --text draws slices of one \
            stream the same way. --tokens uses the file's windows exactly.

            --gradients first|second: before the statistics, a forward and backward pass over the \
            same windows; per linear weight the file gains Σ over windows of the gradient of the \
            window's mean next-token loss (.grad_sum) and, with second, of its square (.grad_sq_sum), \
            for `score --metric taylor` (LLM-Pruner) and `hywia`.

            Statistics, per decoder layer l, at the inputs of q/k/v (model.layers.l.self_attn.q_proj.input.*), \
            o_proj, gate/up (mlp.gate_proj.input.*) and down_proj: token count, per-channel sum and sum of \
            squares (float64); with --gram, XᵀX; at o_proj and down_proj FLAP's fluctuation as its code \
            accumulates it; per block the angular distance, cosine, MSE and MAE sums between input and \
            output hidden states (CFSP). docs/DESIGN.md describes the file.

            --sequential: each layer's statistics are measured on the outputs of the layers before \
            it as pruned by the recipe given here (--metric, --ratio, --structure UL-UM or UL-MM and \
            allocate's other options, --restore): every layer is scored, allocated, sliced and restored \
            as soon as its statistics are complete, then its pruned outputs feed the next layer. Then \
            run score, allocate, slice and restore with the same settings on the statistics (they \
            refuse others) to write the pruned model.

            Example:
              calibrate --model smollm2.st.zst --jsonl c4.jsonl.zst --samples 128 --seqlen 2048 -o stats.st.zst
              calibrate --model smollm2.st.zst --jsonl c4.jsonl.zst --sequential --metric wanda-sp \
                --ratio 0.2 --structure UL-UM -o stats.st.zst
            """)

    @OptionGroup var model: ModelOption

    @OptionGroup(title: "Windows") var windows: WindowOptions

    @Option(name: .long, help: "Gram matrices XᵀX at these points: q_proj, o_proj, gate_proj, down_proj (comma-separated).")
    var gram: String?

    @Option(name: .long, help: "Element type of stored Gram matrices: f32 or f64.")
    var gramDtype: String = "f32"

    @Option(name: .long, help: "Gradient statistics of the language-model loss (each window's mean next-token cross-entropy): first (Σ over windows of the gradient of every linear weight) or second (also Σ of per-window squared gradients: one backward per window).")
    var gradients: String?

    @Option(name: .long, help: "Element type of stored gradient sums: f32 or bf16.")
    var gradDtype: String = "f32"

    @Option(name: .long, help: "Compute shard i of n (i/n, counted from 0) of the windows; merge the shards with 'calibrate merge'.")
    var shard: String?

    @Option(name: .long, help: "Also write the windows used to this file (the --tokens format).")
    var dumpWindows: String?

    @Option(name: .long, help: "Cache folder: each layer's input hidden states and statistics; a rerun skips the layers cached.")
    var cache: String?

    @Option(name: .long, help: "Element type of cached hidden states: f32 (lossless) or bf16 (half the disk; statistics recomputed from it are those of BF16-rounded inputs).")
    var cacheDtype: String = "f32"

    @Flag(name: .long, help: "Compute every layer's statistics from the cached inputs (--cache), with no forward pass through earlier layers.")
    var fromCache = false

    @OptionGroup(title: "Sequential pruning") var sequential: SequentialOptions

    @OptionGroup var output: OutputOption
    @OptionGroup var common: CommonOptions

    func validate() throws {
        if fromCache && cache == nil { throw ValidationError("--from-cache needs --cache DIR") }
        guard ["f32", "bf16"].contains(cacheDtype.lowercased()), ["f32", "f64"].contains(gramDtype.lowercased()) else {
            throw ValidationError("--cache-dtype must be f32 or bf16, --gram-dtype f32 or f64")
        }
        if let gradients, !["first", "second"].contains(gradients) {
            throw ValidationError("--gradients must be first or second")
        }
        guard ["f32", "bf16"].contains(gradDtype.lowercased()) else { throw ValidationError("--grad-dtype must be f32 or bf16") }
    }

    func run() throws {
        try runTool("calibrate", common) {
            try output.checkBinary()
            var request = windows.request()
            request.gramPoints = try StatPoint.list(gram ?? "")
            request.gramDType = gramDtype.lowercased() == "f64" ? .F64 : .F32
            request.shard = try shard.map(parseShard)
            request.dumpWindows = dumpWindows
            request.cache = cache
            request.cacheDType = cacheDtype.lowercased() == "bf16" ? .BF16 : .F32
            request.fromCache = fromCache
            request.gradients = gradients.map {
                GradientLayout(second: $0 == "second", dtype: gradDtype.lowercased() == "bf16" ? .BF16 : .F32)
            }
            let model = try Model.open(self.model.model)
            request.pruner = try sequential.pruner(model: model)
            let progress = Progress("calibrate", total: model.config.numLayers, unit: "layers", quiet: common.quiet)
            let backward = Progress("calibrate gradients", total: 0, unit: "windows", quiet: common.quiet || gradients == nil)
            let run = try Calibrator.run(request, model: model, output: output.output, metadata: standardMetadata(tool: "calibrate"),
                                         note: { if !common.quiet { printError("calibrate: note: \($0)") } },
                                         progress: progress.update,
                                         gradientProgress: { done, total in
                                             backward.total = total
                                             backward.update(done)
                                             if done == total { backward.finish() }
                                         })
            progress.finish()
            if !common.quiet {
                printError(String(format: "calibrate: %d windows × %d tokens (%@), %.1f s, %.0f tokens/s, peak memory %.0f MB",
                                  run.windows, run.length, run.mode, run.seconds,
                                  Double(run.windows * run.length) / max(run.seconds, 1e-9), peakMemoryMB()))
            }
        }
    }
}

Calibrate.runAsTool()
