import ArgumentParser
import Calibration
import Foundation
import Kernels
import LlamaModel
import TensorIO
import Tokenization
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

            Statistics, per decoder layer l, at the inputs of q/k/v (model.layers.l.self_attn.q_proj.input.*), \
            o_proj, gate/up (mlp.gate_proj.input.*) and down_proj: token count, per-channel sum and sum of \
            squares (float64); with --gram, XᵀX; at o_proj and down_proj FLAP's fluctuation as its code \
            accumulates it; per block the angular distance, cosine, MSE and MAE sums between input and \
            output hidden states (CFSP). docs/DESIGN.md describes the file.

            Example:
              calibrate --model smollm2.st.zst --jsonl c4.jsonl.zst --samples 128 --seqlen 2048 -o stats.st.zst
            """)

    @Option(name: .long, help: "The model: a GGUF file, a Hugging Face directory, a PruneKit model file, or -.")
    var model: String

    @Option(name: .long, help: "Calibration documents: JSONL with a 'text' field per line (.zst read directly).")
    var jsonl: String?

    @Option(name: .long, help: "Calibration text: one stream (.zst read directly).")
    var text: String?

    @Option(name: .long, help: "Exact windows: a tensor file with an integer tensor 'tokens' [N, T].")
    var tokens: String?

    @Option(name: .long, help: "Windows to draw (default 128).")
    var samples: Int?

    @Option(name: .long, help: "Window length T in tokens (default 2048).")
    var seqlen: Int?

    @Option(name: .long, help: "Seed of the window drawing (Python's random.seed; default 0).")
    var seed: UInt64?

    @Option(name: .long, help: "Gram matrices XᵀX at these points: q_proj, o_proj, gate_proj, down_proj (comma-separated).")
    var gram: String?

    @Option(name: .long, help: "Element type of stored Gram matrices: f32 or f64.")
    var gramDtype: String = "f32"

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

    @Option(name: [.short, .long], help: "Output statistics file (.st.zst compressed), or - for standard output.")
    var output: String

    @OptionGroup var common: CommonOptions

    func validate() throws {
        let sources = [jsonl, text, tokens].compactMap { $0 }
        guard sources.count == 1 else {
            throw ValidationError("give exactly one of --jsonl, --text and --tokens")
        }
        if tokens != nil && (samples != nil || seqlen != nil || seed != nil) {
            throw ValidationError("--samples, --seqlen and --seed do not apply to --tokens (its windows are used as they are)")
        }
        if let samples, samples < 1 { throw ValidationError("--samples must be at least 1") }
        if let seqlen, seqlen < 1 { throw ValidationError("--seqlen must be at least 1") }
        if fromCache && cache == nil { throw ValidationError("--from-cache needs --cache DIR") }
        guard ["f32", "bf16"].contains(cacheDtype.lowercased()) else {
            throw ValidationError("--cache-dtype must be f32 or bf16")
        }
        guard ["f32", "f64"].contains(gramDtype.lowercased()) else {
            throw ValidationError("--gram-dtype must be f32 or f64")
        }
    }

    func run() throws {
        try runToolBody("calibrate") {
            installInterruptCleanup()
            if let t = common.threads { BLAS.setThreads(t) }
            try checkBinaryOutput(output)
            var gramPoints = Set<StatPoint>()
            for name in (gram ?? "").split(separator: ",") {
                guard let p = StatPoint(module: name.trimmingCharacters(in: .whitespaces)) else {
                    throw UsageError("--gram: unknown point '\(name)' (q_proj, o_proj, gate_proj, down_proj)")
                }
                gramPoints.insert(p)
            }
            var shardSpec: (Int, Int)? = nil
            if let shard {
                let parts = shard.split(separator: "/")
                guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
                    throw UsageError("--shard must be i/n with 0 ≤ i < n, got '\(shard)'")
                }
                shardSpec = (i, n)
            }
            let source: CalibrationSource = jsonl.map { .jsonl($0) } ?? text.map { .text($0) } ?? .tokens(tokens!)
            let model = try Model.open(self.model)
            let T = seqlen ?? 2048
            if tokens == nil, T > model.config.maxPositionEmbeddings {
                throw UsageError("--seqlen \(T) exceeds the model's context of \(model.config.maxPositionEmbeddings) tokens")
            }
            let tokenizer = try model.tokenizerJSON.map { try Tokenizer(json: Data($0.utf8)) }
            let windows = try CalibrationWindows.draw(source, tokenizer: tokenizer, samples: samples ?? 128,
                                                      length: T, seed: seed ?? 0,
                                                      vocabularySize: model.config.vocabSize)
            if let note = windows.note, !common.quiet { printError("calibrate: note: \(note)") }
            let calibrator = try Calibrator(model: model, windows: windows, shard: shardSpec, gramPoints: gramPoints,
                                            gramDType: gramDtype.lowercased() == "f64" ? .F64 : .F32)
            if let dumpWindows {
                let (entry, bytes) = windows.tensor()
                try writeTensorFile(path: dumpWindows, tensors: [(entry, bytes)],
                                    metadata: standardMetadata(tool: "calibrate").merging(
                                        ["seed": "\(seed ?? 0)", "source": source.path, "windows_mode": windows.mode,
                                         "sha256": windows.sha256]) { $1 })
            }
            let fingerprint = try model.fingerprint()
            let activationCache = try cache.map {
                try ActivationCache(directory: $0, element: cacheDtype.lowercased() == "bf16" ? .BF16 : .F32,
                                    fingerprint: fingerprint, windows: windows, range: calibrator.range,
                                    batchWindows: calibrator.batchWindows)
            }
            let metadata = calibrator.metadata(fingerprint: fingerprint, source: source, seed: seed ?? 0)
                .merging(standardMetadata(tool: "calibrate")) { $1 }
            let writer = try TensorFileWriter(path: output, entries: calibrator.layout.entries(model.config),
                                              metadata: metadata)
            let progress = Progress("calibrate", total: model.config.numLayers, unit: "layers", quiet: common.quiet)
            let start = Date()
            try writer.complete {
                try calibrator.run(into: writer, cache: activationCache, fromCache: fromCache) { progress.update($0) }
            }
            progress.finish()
            if !common.quiet {
                let seconds = Date().timeIntervalSince(start)
                let tokens = calibrator.range.count * windows.length
                printError(String(format: "calibrate: %d windows × %d tokens (%@), %.1f s, %.0f tokens/s, peak memory %.0f MB",
                                  calibrator.range.count, windows.length, windows.mode, seconds,
                                  Double(tokens) / max(seconds, 1e-9), peakMemoryMB()))
            }
        }
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Add the statistics of disjoint shards of the same windows (calibrate --shard i/n).",
        discussion: """
            The shards must come from the same model, data, windows and settings. When they cover every \
            shard the result is a complete statistics file (per-window sums become FLAP's fluctuation), \
            equal to one run over all windows up to float64 rounding; otherwise it is a shard file of \
            their union.

            Example:
              calibrate merge s0.st.zst s1.st.zst s2.st.zst -o stats.st.zst
            """)

    @Argument(help: "Statistics files of shards.")
    var inputs: [String]

    @Option(name: [.short, .long], help: "Output statistics file, or - for standard output.")
    var output: String

    @Flag(name: .long, help: "No progress or summary on standard error.")
    var quiet = false

    func run() throws {
        try runToolBody("calibrate merge") {
            installInterruptCleanup()
            try checkBinaryOutput(output)
            guard !inputs.isEmpty else { throw UsageError("give the shard files to merge") }
            try StatisticsMerge.merge(inputs, output: output, metadata: standardMetadata(tool: "calibrate merge"))
        }
    }
}

Calibrate.main()
