import Foundation
import LlamaModel
import TensorIO
import TestSupport
import Tokenization
import Training
import XCTest

/// Checkpoints (a resumed run equals an uninterrupted one, bit for bit; other runs refused), the
/// training data's kinds and refusals, and PEFT's adapter files.
final class FinetuneStateTests: XCTestCase {
    let model = try! Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)

    func examples(_ n: Int, length: Int = 12, seed: UInt64 = 4) -> [TrainingExample] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in TrainingExample(window: (0..<length).map { _ in Int32(rng.next(below: 97)) }) }
    }

    func options(steps: Int = 6) -> FinetuneOptions {
        var o = FinetuneOptions()
        o.rank = 3
        o.alpha = 6
        o.dropout = 0.1
        o.steps = steps
        o.batch = 2
        o.microBatch = 1
        o.learningRate = 1e-2
        o.warmup = 2
        o.schedule = .cosine
        o.seed = 11
        return o
    }

    func trainer(_ o: FinetuneOptions, _ data: [TrainingExample]) throws -> LoRATrainer {
        let adapters = LoRAAdapters(config: model.config, alpha: o.alpha, dropout: o.dropout) { o.rank(layer: $0, $1) }
        adapters.initialize(seed: o.seed)
        return try LoRATrainer(runner: Runner(model: model, maxPositions: 12), adapters: adapters, options: o, examples: data)
    }

    func testAResumedRunGivesTheSameAdaptersBitForBit() throws {
        let dir = try Fixtures.temporaryDirectory()
        let data = examples(5)  // 2 steps an epoch: 6 steps cross three epochs' orders
        let o = options()
        let straight = try trainer(o, data)
        for _ in 0..<6 { try straight.runStep() }
        try PEFTAdapters.write(straight.adapters, options: o, directory: dir.appendingPathComponent("a").path, baseModel: nil)

        let run = ["model": try model.fingerprint(), "data": "d"].merging(o.record) { a, _ in a }
        let first = try trainer(o, data)
        for _ in 0..<3 { try first.runStep() }
        let checkpoint = dir.appendingPathComponent("ck").path
        try FinetuneCheckpoint.write(path: checkpoint, trainer: first, run: run, evaluations: [(3, 1.5)])
        let resumed = try trainer(o, data)
        let evaluations = try FinetuneCheckpoint.resume(path: checkpoint, trainer: resumed, run: run)
        XCTAssertEqual(evaluations.map(\.step), [3])
        XCTAssertEqual(resumed.step, 3)
        for _ in 0..<3 { try resumed.runStep() }
        try PEFTAdapters.write(resumed.adapters, options: o, directory: dir.appendingPathComponent("b").path, baseModel: nil)
        XCTAssertEqual(resumed.history, straight.history)
        for file in ["adapter_model.safetensors", "adapter_config.json"] {
            let a = try Data(contentsOf: dir.appendingPathComponent("a/" + file))
            let b = try Data(contentsOf: dir.appendingPathComponent("b/" + file))
            XCTAssertEqual(a, b, file)
        }
        // Batches cover each epoch's examples once, in an order that changes between epochs.
        XCTAssertEqual(Set(straight.batch(step: 0) + straight.batch(step: 1)).count, 4)
        XCTAssertNotEqual(straight.batch(step: 0) + straight.batch(step: 1), straight.batch(step: 2) + straight.batch(step: 3))

        // Another run's checkpoint: refused, naming what differs; the trainer is left alone.
        var other = o
        other.learningRate = 2e-2
        var otherRun = run.merging(other.record) { _, b in b }
        XCTAssertThrowsError(try FinetuneCheckpoint.resume(path: checkpoint, trainer: try trainer(other, data), run: otherRun)) {
            XCTAssertTrue("\($0)".contains("another run: lr was 0.01, now 0.02"), "\($0)")
        }
        otherRun = run
        otherRun["model"] = "0123456789abcdef"
        XCTAssertThrowsError(try FinetuneCheckpoint.resume(path: checkpoint, trainer: try trainer(o, data), run: otherRun)) {
            XCTAssertTrue("\($0)".contains("a checkpoint of another model"), "\($0)")
        }
        XCTAssertThrowsError(try FinetuneCheckpoint.resume(path: Fixtures.url("model/tiny_uniform.safetensors").path,
                                                          trainer: try trainer(o, data), run: run)) {
            XCTAssertTrue("\($0)".contains("not a finetune checkpoint"), "\($0)")
        }
    }

    func testFewerExamplesThanABatchAndNaNLossAreRefused() throws {
        XCTAssertThrowsError(try trainer(options(), examples(1))) {
            XCTAssertTrue("\($0)".contains("fewer than one batch"), "\($0)")
        }
        var o = options()
        o.learningRate = 1e30
        o.dropout = 0
        let t = try trainer(o, examples(4))
        XCTAssertThrowsError(try { for _ in 0..<4 { try t.runStep() } }()) {
            XCTAssertTrue("\($0)".contains("training stopped"), "\($0)")
        }
    }

    func testRankZeroAndNoStepsChangeNothing() throws {
        var o = options()
        o.rank = 0
        let none = LoRAAdapters(config: model.config, alpha: 1, dropout: 0) { o.rank(layer: $0, $1) }
        XCTAssertEqual(none.count, 0)
        o.rank = 4
        let fresh = LoRAAdapters(config: model.config, alpha: 8, dropout: 0) { o.rank(layer: $0, $1) }
        fresh.initialize(seed: 1)
        for l in 0..<model.config.numLayers {
            for p in Projection.allCases { XCTAssertFalse(fresh.changes(layer: l, p)) }
        }
    }

    /// Alpaca records: the prompt as LLM-Pruner's Prompter writes it, the loss on the response
    /// (and the EOS after it) only; a record without `output`, mixed kinds and bad JSON refused
    /// with the line.
    func testInstructionRecordsTrainOnTheResponseOnly() throws {
        let file = try GGUFFile(path: Fixtures.data("tokenizers/ggml-vocab-llama-bpe.gguf").path)
        let tokenizer = try Tokenizer(gguf: file.metadata)
        let dir = try Fixtures.temporaryDirectory()
        let path = dir.appendingPathComponent("a.jsonl").path
        try """
            {"instruction": "Name a colour.", "input": "", "output": "Blue."}
            {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}

            """.write(toFile: path, atomically: true, encoding: .utf8)
        let data = try TrainingData.jsonl(path, tokenizer: tokenizer, length: 256)
        XCTAssertEqual(data.kind, "instructions")
        XCTAssertEqual(data.examples.count, 2)
        for (example, (prompt, output)) in zip(data.examples, [
            ("Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nName a colour.\n\n### Response:\n", "Blue."),
            ("Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n", "5"),
        ]) {
            let full = tokenizer.encode(prompt + output, addSpecialTokens: true) + [tokenizer.eosTokenID!]
            let promptLength = tokenizer.encode(prompt, addSpecialTokens: true).count
            XCTAssertEqual(example.tokens, full)
            XCTAssertEqual(example.targets.prefix(promptLength - 1).allSatisfy { $0 == -1 }, true)
            XCTAssertEqual(Array(example.targets[(promptLength - 1)..<(full.count - 1)]), Array(full[promptLength...]))
            XCTAssertEqual(example.targets.last, -1)
        }
        // Truncated to the window: no EOS then.
        let short = try TrainingData.jsonl(path, tokenizer: tokenizer, length: 20)
        XCTAssertEqual(short.examples[0].tokens.count, 20)
        XCTAssertNotEqual(short.examples[0].tokens.last, tokenizer.eosTokenID)

        for (text, message) in [
            ("{\"instruction\": \"x\", \"input\": \"\"}\n", "a.jsonl:1: an instruction record needs a string field 'output'"),
            ("{\"text\": \"a b c\"}\n{\"instruction\": \"x\", \"output\": \"y\"}\n", "a.jsonl:2: an instruction record in a file of 'text' records"),
            ("{\"text\": \"a\"}\n{\"text\": 3}\n", "a.jsonl:2: 'text' is not a string"),
            ("{\"text\": \"a\"\n", "a.jsonl:1: "),
            ("[1, 2]\n", "a.jsonl:1: not a JSON object"),
            ("{\"title\": \"a\"}\n", "a.jsonl:1: neither a 'text' nor an 'instruction' record"),
        ] {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try TrainingData.jsonl(path, tokenizer: tokenizer, length: 64), message) {
                XCTAssertTrue("\($0)".contains(message), "\($0)")
            }
        }
        // Documents: concatenated and cut into whole windows.
        try "{\"text\": \"one two three four five six seven\"}\n{\"text\": \"eight nine ten\"}\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let docs = try TrainingData.jsonl(path, tokenizer: tokenizer, length: 4)
        let ids = tokenizer.encode("one two three four five six seven", addSpecialTokens: true)
            + tokenizer.encode("eight nine ten", addSpecialTokens: true)
        XCTAssertEqual(docs.kind, "documents")
        XCTAssertEqual(docs.examples.map(\.tokens), stride(from: 0, to: ids.count - 3, by: 4).map { Array(ids[$0..<($0 + 4)]) })
    }

    /// adapter_config.json: PEFT's fields; ranks that differ go to rank_pattern.
    func testPEFTConfigurationAndNames() throws {
        var o = options()
        o.targets = [.q, .down]
        let adapters = LoRAAdapters(config: model.config, alpha: 6, dropout: 0) { l, p in
            o.targets.contains(p) ? (l == 1 && p == .down ? 5 : 3) : 0
        }
        let dir = try Fixtures.temporaryDirectory().appendingPathComponent("peft")
        try PEFTAdapters.write(adapters, options: o, directory: dir.path, baseModel: nil)
        let config = try JSONValue.parse(Array(try Data(contentsOf: dir.appendingPathComponent("adapter_config.json"))))
        XCTAssertEqual(config["r"]?.int, 3)
        XCTAssertEqual(config["lora_alpha"]?.int, 6)
        XCTAssertEqual(config["target_modules"]?.items?.compactMap(\.string), ["q_proj", "down_proj"])
        XCTAssertEqual(config["rank_pattern"]?.members?.map(\.key), ["model.layers.1.mlp.down_proj"])
        XCTAssertEqual(config["rank_pattern"]?["model.layers.1.mlp.down_proj"]?.int, 5)
        let file = try TensorFile(path: dir.appendingPathComponent("adapter_model.safetensors").path)
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(file.header.entries.first?.name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
        XCTAssertEqual(file.header.entry("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")?.shape,
                       [model.config.hiddenSize, 5])
        // A folder holding anything else is not replaced.
        try "x".write(to: dir.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try PEFTAdapters.write(adapters, options: o, directory: dir.path, baseModel: nil))
    }
}

/// Importance-guided ranks: the uniform rank's adapter parameters, ranks following importance.
final class RankBudgetTests: XCTestCase {
    func testRanksFollowImportanceWithinTheUniformBudget() throws {
        let importance = [0.10, 0.30, 0.20, 0.05, 0.35], cost = [100, 100, 60, 100, 0]
        let ranks = try RankBudget.importanceGuided(importance: importance, costPerRank: cost, rank: 8)
        let spent = zip(ranks, cost).reduce(0) { $0 + $1.0 * $1.1 }
        XCTAssertLessThanOrEqual(spent, 8 * cost.reduce(0, +))
        XCTAssertGreaterThan(spent, 8 * cost.reduce(0, +) - cost.max()!)  // no whole unit left unspent
        XCTAssertEqual(ranks[4], 0)  // nothing to adapt
        XCTAssertEqual(ranks.prefix(4).map { $0 }, [5, 15, 11, 2])  // 8·I/Ī = 5.05, 15.16, 10.11, 2.53 (Ī = 57/360)
        XCTAssertEqual(try RankBudget.importanceGuided(importance: [1, 1, 1], costPerRank: [5, 5, 5], rank: 4), [4, 4, 4])
        XCTAssertEqual(try RankBudget.importanceGuided(importance: [0, 1], costPerRank: [5, 5], rank: 4), [1, 7])
        XCTAssertThrowsError(try RankBudget.importanceGuided(importance: [.nan, 1], costPerRank: [5, 5], rank: 4))
    }
}
