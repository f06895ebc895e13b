import ArgumentParser
import Evaluation
import Foundation
import LlamaModel
import ToolSupport

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Measure a model: perplexity on WikiText-2, PTB, C4 or a text file; zero-shot task accuracy.",
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
            --tasks scores the zero-shot commonsense tasks (boolq, piqa, hellaswag, winogrande, arc_easy, \
            arc_challenge, openbookqa, or all) from $PRUNEKIT_DATA/tasks as lm-evaluation-harness 0.4 \
            does: every choice's summed log-likelihood after the prompt; acc, and acc_norm (divided by \
            the choice's length in characters) for piqa, hellaswag, arc and openbookqa; --limit N \
            takes the first N items of each task. The average is over acc_norm where reported, else acc.
            A table goes to standard error (with --quiet too: it is the result); --json prints one JSON object \
            on standard output.

            Example:
              evaluate --model pruned.st.zst --ppl wikitext2 --seqlen 2048 --json
              evaluate --model pruned.st.zst --tasks all --json
            """)

    @OptionGroup var model: ModelOption

    @Option(name: .long, help: "Perplexity dataset: wikitext2, ptb, c4 or a text file path.")
    var ppl: String?

    @Option(name: .long, help: "Window length T in tokens.")
    var seqlen: Int = 2048

    @Option(name: .long, help: "Zero-shot tasks: \(ZeroShotTask.allCases.map(\.rawValue).joined(separator: ", ")), or all.")
    var tasks: String?

    @Option(name: .long, help: "Evaluate only the first N windows (perplexity) or items of each task.")
    var limit: Int?

    @Option(name: .long, help: "Exact windows: a tensor file with an integer tensor 'tokens' [N, T].")
    var tokens: String?

    @Option(name: .long, help: "Write the dataset's token ids (int32 tensor 'tokens' [1, n]) to this tensor file.")
    var dumpTokens: String?

    @OptionGroup(title: "Generation") var generation: GenerationOptions
    @OptionGroup(title: "Report") var reports: ReportOptions
    @OptionGroup var json: JSONOption

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard seqlen >= 2 else { throw ValidationError("--seqlen must be at least 2") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        guard [ppl, tokens, tasks, generation.generate, reports.report ? "" : nil].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give one of --ppl DATASET, --tokens FILE, --tasks LIST, --generate PROMPT and --report")
        }
    }

    func run() throws {
        try runTool("evaluate", common) {
            let model = try Model.open(self.model.model)
            if let tasks { return try zeroShot(model, tasks: try ZeroShotTask.list(tasks)) }
            if let prompt = generation.generate { return try generate(model, prompt: prompt) }
            if reports.report { return try speedReport(model) }
            let context = model.config.maxPositionEmbeddings
            guard seqlen <= context || tokens != nil else {
                throw UsageError("--seqlen \(seqlen) exceeds the model's context of \(context) tokens")
            }
            if let dumpTokens { try checkBinaryOutput(dumpTokens) }
            let data = try tokens.map { try PerplexityWindows(tokensFile: $0, vocabularySize: model.config.vocabSize, limit: limit) }
                ?? PerplexityWindows(dataset: EvaluationDataset(ppl ?? ""), model: model, length: seqlen, limit: limit,
                                     dumpTokens: dumpTokens, metadata: standardMetadata(tool: "evaluate"))
            let T = data.windows[0].count
            guard T <= context else { throw UsageError("windows of \(T) tokens exceed the model's context of \(context)") }
            let layers = Progress("evaluate", total: model.config.numLayers, unit: "layers", quiet: common.quiet)
            let report = try evaluatePerplexity(runner: Runner(model: model, maxPositions: T), dataset: data.name,
                                                stream: data.stream, windows: data.windows) { phase, done, _ in
                if phase == "layers" { layers.update(done) }
            }
            layers.finish()
            report.table(model: self.model.model).forEach(printError)
            if json.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            }
        }
    }
}

Evaluate.runAsTool()
