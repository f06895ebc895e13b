import ArgumentParser
import Evaluation
import Foundation
import Kernels
import LlamaModel
import TensorIO
import Tokenization
import ToolSupport

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Measure a model: perplexity on WikiText-2, PTB, C4 or a text file.",
        discussion: """
            Perplexity follows the pruning literature (FLAP, Wanda, LLM-Pruner):
              wikitext2  the rows of the wikitext-2-raw-v1 test split joined by "\\n\\n" (a row \
            is a line of wiki.test.raw with its "\\n"; a whitespace-only line is the empty row)
              ptb        the lines of ptb.test.txt, each stripped, joined by " "
              c4         the text fields of the 2,000 documents of \
            c4-validation-sample-2k.jsonl.zst joined by "\\n\\n"
              PATH       a text file as it is (zstd-compressed files are read too)
            The text is tokenised as transformers does (BOS only if the tokenizer adds one) and \
            cut into N = floor(tokens / T) non-overlapping windows of T = --seqlen tokens; \
            perplexity = exp(mean negative log-likelihood over the T-1 predicted positions of \
            every window). Data is read from $PRUNEKIT_DATA (default: shared/data beside the \
            checkout).
            A table goes to standard error; --json prints one JSON object on standard output.

            Example:
              evaluate --model pruned.st.zst --ppl wikitext2 --seqlen 2048 --json
            """)

    @Option(name: .long, help: "The model: GGUF file, Hugging Face directory, model file or -.")
    var model: String

    @Option(name: .long, help: "Perplexity dataset: wikitext2, ptb, c4 or a text file path.")
    var ppl: String?

    @Option(name: .long, help: "Window length T in tokens.")
    var seqlen: Int = 2048

    @Option(name: .long, help: "Evaluate only the first N windows.")
    var limit: Int?

    @Option(name: .long, help: "Exact windows: a tensor file with an integer tensor 'tokens' [N, T].")
    var tokens: String?

    @Option(name: .long, help: "Write the dataset's token ids (int32 tensor 'tokens' [1, n]) to this tensor file.")
    var dumpTokens: String?

    @Flag(name: .long, help: "Print the result as JSON on standard output.")
    var json = false

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard seqlen >= 2 else { throw ValidationError("--seqlen must be at least 2") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        guard ppl != nil || tokens != nil else {
            throw ValidationError("nothing to evaluate: give --ppl DATASET or --tokens FILE")
        }
        if ppl != nil && tokens != nil {
            throw ValidationError("--ppl and --tokens exclude each other")
        }
    }

    func run() throws {
        try runToolBody("evaluate") {
            installInterruptCleanup()
            if let t = common.threads { BLAS.setThreads(t) }
            let model = try Model.open(self.model)
            guard seqlen <= model.config.maxPositionEmbeddings || tokens != nil else {
                throw UsageError("--seqlen \(seqlen) exceeds the model's context of \(model.config.maxPositionEmbeddings) tokens")
            }
            let (name, stream, windows) = try loadWindows(model)
            let T = windows[0].count
            guard T <= model.config.maxPositionEmbeddings else {
                throw UsageError("windows of \(T) tokens exceed the model's context of \(model.config.maxPositionEmbeddings)")
            }
            let runner = Runner(model: model, maxPositions: T)
            let layers = Progress("evaluate", total: model.config.numLayers, unit: "layers",
                                  quiet: common.quiet)
            let report = try evaluatePerplexity(
                runner: runner, dataset: name, stream: stream, windows: windows
            ) { phase, done, total in
                if phase == "layers" { layers.update(done) }
            }
            layers.finish()
            printTable(report)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                let data = try encoder.encode(report)
                print(String(decoding: data, as: UTF8.self))
            }
        }
    }

    private func loadWindows(_ model: Model) throws -> (String, TokenStream, [[Int32]]) {
        if let path = tokens {
            let file = try TensorFile(path: path)
            guard let entry = file.header.entry("tokens"), entry.shape.count == 2 else {
                throw DatasetError(.badData, "\(path): no integer tensor 'tokens' of shape [N, T]")
            }
            let ids = try file.integers("tokens")
            let (N, T) = (entry.shape[0], entry.shape[1])
            guard N > 0, T >= 2 else {
                throw DatasetError(.badData, "\(path): 'tokens' has shape \(entry.shape); need N ≥ 1, T ≥ 2")
            }
            for (i, id) in ids.enumerated() where id < 0 || id >= model.config.vocabSize {
                throw DatasetError(.badData, "\(path): token id \(id) at [\(i / T), \(i % T)] is outside the vocabulary (\(model.config.vocabSize))")
            }
            let stream = TokenStream(ids: ids.map { Int32($0) })
            return (path, stream, stream.windows(length: T, limit: limit))
        }
        let dataset = EvaluationDataset(ppl ?? "")
        let text = try dataset.text()
        guard !text.isEmpty else {
            throw DatasetError(.badData, "\(dataset.name): the text is empty")
        }
        guard let json = model.tokenizerJSON else {
            throw DatasetError(.badData, "\(self.model): the model has no tokenizer")
        }
        let tokenizer = try Tokenizer(json: Data(json.utf8))
        let stream = TokenStream(text: text, tokenizer: tokenizer)
        if let dumpTokens {
            try checkBinaryOutput(dumpTokens)
            try writeTensorFile(
                path: dumpTokens,
                tensors: [(TensorEntry(name: "tokens", dtype: .I32, shape: [1, stream.ids.count]),
                           stream.ids.withUnsafeBytes { Array($0) })],
                metadata: standardMetadata(tool: "evaluate").merging(
                    ["dataset": dataset.name, "sha256": stream.sha256]) { $1 })
        }
        let windows = stream.windows(length: seqlen, limit: limit)
        guard !windows.isEmpty else {
            throw DatasetError(.badData, "\(dataset.name): \(stream.ids.count) tokens, fewer than one window of \(seqlen)")
        }
        return (dataset.name, stream, windows)
    }

    private func printTable(_ r: PerplexityReport) {
        let rows: [(String, String)] = [
            ("model", model),
            ("dataset", r.dataset),
            ("perplexity", String(format: "%.4f", r.perplexity)),
            ("windows × T", "\(r.windows) × \(r.seqlen)"),
            ("tokens evaluated", "\(r.tokensEvaluated) of \(r.datasetTokens)"),
            ("token ids sha256", r.datasetTokensSHA256),
            ("parameters", "\(r.parameters)"),
            ("tokens/s", String(format: "%.1f", r.tokensPerSecond)),
        ]
        let width = rows.map { $0.0.count }.max() ?? 0
        for (k, v) in rows {
            printError(k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v)
        }
    }
}

Evaluate.main()
