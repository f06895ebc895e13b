import ArgumentParser
import Foundation
import LlamaModel
import Tokenization
import ToolSupport

/// `evaluate --generate PROMPT`: incremental decoding with a key/value cache.
struct GenerationOptions: ParsableArguments {
    @Option(name: .long, help: "Generate text after this prompt (raw text, no chat template): the text on standard output, tokens/s on standard error.")
    var generate: String?

    @Option(name: .long, help: "New tokens to generate.")
    var maxTokens: Int = 64

    @Option(name: .long, help: "Sampling temperature; 0 (the default) is greedy decoding.")
    var temperature: Double = 0

    @Option(name: .long, help: "Nucleus sampling: draw only from the most likely tokens up to this probability.")
    var topP: Double = 1

    @Option(name: .long, help: "Seed of the sampling.")
    var seed: UInt64 = 0

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be ≥ 0") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
    }
}

extension Evaluate {
    func generate(_ model: Model, prompt: String) throws {
        let tokenizer = try model.tokenizer()
        let ids = tokenizer.encode(prompt, addSpecialTokens: true)
        let context = model.config.maxPositionEmbeddings, g = generation
        guard !ids.isEmpty else { throw UsageError("--generate: the prompt encodes to no tokens") }
        guard ids.count + g.maxTokens - 1 <= context else {
            throw UsageError("--generate: the prompt (\(ids.count) tokens) and --max-tokens \(g.maxTokens) exceed the model's context of \(context) tokens")
        }
        let runner = Runner(model: model, maxPositions: ids.count + g.maxTokens)
        let stop = model.config.eosTokenID.map(Int32.init)  // generation ends at the end-of-sequence token, not printed
        let start = Date()
        var first: Date?
        let out = try runner.generate(prompt: ids, count: g.maxTokens,
                                      sampling: Sampling(temperature: g.temperature, topP: g.topP, seed: g.seed),
                                      stop: stop) { _ in if first == nil { first = Date() } }
        let end = Date()
        print(tokenizer.decode(out.last == stop ? Array(out.dropLast()) : out))
        if !common.quiet {
            let prefill = (first ?? end).timeIntervalSince(start), decode = end.timeIntervalSince(first ?? end)
            // Three significant digits: a 7B model read from its file every token makes well under 1 token/s.
            printError(String(format: "generate: prompt %d tokens in %.2f s (%.3g tokens/s); %d new tokens, %.3g tokens/s after the first",
                              ids.count, prefill, Double(ids.count) / max(prefill, 1e-9), out.count,
                              Double(max(out.count - 1, 0)) / max(decode, 1e-9)))
        }
    }
}
