import ArgumentParser
import Calibration
import Foundation
import LlamaModel
import TensorIO
import ToolSupport
import Training

struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "LoRA recovery fine-tuning of a (pruned) model: adapters merged into its weights, or PEFT adapters.",
        discussion: """
            Trains low-rank adapters (PEFT's LoRA: y = xWᵀ + (α/r)·B·A·drop(x), A Kaiming-uniform, B zero) on \
            frozen weights with AdamW (β 0.9/0.999, ε 1e-8, weight decay 0, gradient norm clipped at 1: \
            transformers' defaults), the batch's loss the mean over its counted positions, accumulated over \
            micro-batches. Data: plain text (--text: consecutive windows of --seqlen), JSONL of 'text' \
            documents (concatenated, cut into windows), JSONL of Alpaca records (instruction, input, output: \
            the loss on the response only), or exact windows (--tokens). Deterministic for a thread count: \
            a run resumed from --checkpoint-every's file gives the same adapters as one not interrupted.

            Examples:
              finetune --model pruned.st.zst --jsonl c4.jsonl.zst --steps 200 -o recovered.st.zst
              finetune --model pruned.st.zst --jsonl alpaca.jsonl --epochs 2 --adapters-only -o adapters/
            """)

    @OptionGroup var model: ModelOption

    @Option(name: .long, help: "JSONL of 'text' documents or of Alpaca records (.zst read directly).")
    var jsonl: String?
    @Option(name: .long, help: "Plain text (.zst read directly), cut into windows of --seqlen.")
    var text: String?
    @Option(name: .long, help: "Exact windows: a tensor file with an integer tensor 'tokens' [N, T].")
    var tokens: String?

    @Option(name: .long, help: "LoRA rank r (0: no adapters; the model is written unchanged).")
    var rank = 8
    @Option(name: .long, help: "LoRA α (the adapters' scale is α/r).")
    var alpha = 16.0
    @Option(name: .long, help: "Dropout on the adapters' input (PEFT's lora_dropout).")
    var dropout = 0.05
    @Option(name: .long, help: "Adapted projections, of q,k,v,o,gate,up,down.")
    var targets = "q,k,v,o,gate,up,down"

    @Option(name: .long, help: "CFSP's importance-guided recovery: each block's rank follows its mean angular distance in these statistics (calibrate), with the adapter parameters of a uniform --rank.")
    var budgetBy: String?

    @Option(name: .long, help: "Optimizer steps (or --epochs).")
    var steps: Int?
    @Option(name: .long, help: "Passes over the training examples (each ⌊examples/batch⌋ steps).")
    var epochs: Int?
    @Option(name: .long, help: "Peak learning rate.")
    var lr = 1e-4
    @Option(name: .long, help: "Linear warm-up steps.")
    var warmup = 0
    @Option(name: .long, help: "Schedule after warm-up: cosine, linear or constant.")
    var schedule = "linear"
    @Option(name: .long, help: "AdamW's decoupled weight decay.")
    var weightDecay = 0.0
    @Option(name: .long, help: "Clip the gradient's global L2 norm to this (0: no clipping).")
    var maxGradNorm = 1.0
    @Option(name: .long, help: "Examples per optimizer step.")
    var batch = 64
    @Option(name: .long, help: "Examples per forward and backward (gradient accumulation over batch/micro-batch).")
    var microBatch = 4
    @Option(name: .long, help: "Window length in tokens (Alpaca records are truncated to it).")
    var seqlen = 256
    @Option(name: .long, help: "Seed of the adapters' initialisation, the data order and the dropout masks.")
    var seed: UInt64 = 0
    @Flag(name: .long, help: "Train on the examples in file order (default: a new order every epoch).")
    var noShuffle = false
    @Option(name: .long, help: "Activations for the backward: keep (every layer's) or recompute (one more forward).")
    var activations = "keep"

    @Option(name: .long, help: "Every K steps, the held-out perplexity (examples at the end of the data, not trained on).")
    var evalEvery: Int?
    @Option(name: .long, help: "Held-out examples with --eval-every.")
    var evalExamples = 16
    @Option(name: .long, help: "Draw the training and held-out loss curves to this SVG file.")
    var plot: String?
    @Option(name: .long, help: "Every K steps, write a checkpoint (adapters, optimizer state, step) atomically.")
    var checkpointEvery: Int?
    @Option(name: .long, help: "The checkpoint file (default: OUTPUT.checkpoint).")
    var checkpoint: String?
    @Option(name: .long, help: "Continue the run a checkpoint recorded (the same model, data and options).")
    var resume: String?
    @Flag(name: .long, help: "Write PEFT adapters (adapter_model.safetensors, adapter_config.json) to the OUTPUT directory instead of a merged model.")
    var adaptersOnly = false

    @OptionGroup var output: OutputOption
    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard [jsonl, text, tokens].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --jsonl, --text and --tokens")
        }
        guard (steps == nil) != (epochs == nil) else { throw ValidationError("give exactly one of --steps and --epochs") }
        guard (steps ?? 0) >= 0, (epochs ?? 0) >= 0 else { throw ValidationError("--steps and --epochs must be ≥ 0") }
        guard rank >= 0, rank <= 4096 else { throw ValidationError("--rank must be in 0…4096") }
        guard alpha.isFinite, alpha > 0 else { throw ValidationError("--alpha must be positive") }
        guard dropout >= 0, dropout < 1 else { throw ValidationError("--dropout must be in [0, 1)") }
        guard lr.isFinite, lr >= 0, weightDecay.isFinite, weightDecay >= 0, maxGradNorm.isFinite, maxGradNorm >= 0 else {
            throw ValidationError("--lr, --weight-decay and --max-grad-norm must be finite and ≥ 0")
        }
        guard warmup >= 0 else { throw ValidationError("--warmup must be ≥ 0") }
        guard batch > 0, microBatch > 0, batch % microBatch == 0, batch <= 1 << 20 else {
            throw ValidationError("--batch must be a positive multiple of --micro-batch")
        }
        guard seqlen >= 2, seqlen <= 1 << 20 else { throw ValidationError("--seqlen must be in 2…1048576") }
        guard (evalEvery ?? 1) > 0, evalExamples > 0, (checkpointEvery ?? 1) > 0 else {
            throw ValidationError("--eval-every, --eval-examples and --checkpoint-every must be positive")
        }
    }

    func run() throws {
        try runTool("finetune", common) {
            if !adaptersOnly { try output.checkBinary() }
            guard let schedule = LearningRateSchedule(rawValue: schedule) else {
                throw UsageError("--schedule must be cosine, linear or constant")
            }
            guard let policy = ActivationPolicy(rawValue: activations) else {
                throw UsageError("--activations must be keep or recompute")
            }
            let projections = try targets.split(separator: ",").map { name -> Projection in
                guard let p = Projection(shortName: name.hasSuffix("_proj") ? String(name) : name + "_proj") else {
                    throw UsageError("unknown target '\(name)' (q, k, v, o, gate, up, down)")
                }
                return p
            }
            let model = try Model.open(self.model.model)
            let dataPath = (jsonl ?? text ?? tokens)!
            let data: TrainingData
            if let tokens {
                data = try TrainingData.tokens(tokens, vocabularySize: model.config.vocabSize)
            } else {
                let tokenizer = try model.tokenizer(for: "to read text (use --tokens)")
                data = try jsonl.map { try TrainingData.jsonl($0, tokenizer: tokenizer, length: seqlen) }
                    ?? TrainingData.text(text!, tokenizer: tokenizer, length: seqlen)
            }
            var examples = data.examples
            let longest = examples.map(\.tokens.count).max() ?? 0
            guard longest <= model.config.maxPositionEmbeddings else {
                throw UsageError("examples of \(longest) tokens exceed the model's context of \(model.config.maxPositionEmbeddings) tokens")
            }
            var heldOut: [TrainingExample] = []
            if evalEvery != nil {
                guard examples.count > evalExamples else {
                    throw TrainingError("\(dataPath): \(examples.count) examples leave none to train on after \(evalExamples) held out")
                }
                heldOut = Array(examples.suffix(evalExamples))
                examples.removeLast(evalExamples)
            }
            guard !examples.isEmpty else { throw TrainingError("\(dataPath): the data gives no training example (\(data.kind))") }
            guard examples.count >= batch else {
                throw TrainingError("\(dataPath): \(examples.count) training examples (\(data.kind)) are fewer than one batch of \(batch)")
            }
            var options = FinetuneOptions()
            options.rank = rank
            options.alpha = alpha
            options.dropout = Float(dropout)
            options.targets = projections
            options.steps = steps ?? epochs! * (examples.count / batch)
            options.batch = batch
            options.microBatch = microBatch
            options.learningRate = lr
            options.warmup = warmup
            options.schedule = schedule
            options.weightDecay = weightDecay
            options.maxGradNorm = maxGradNorm
            options.seed = seed
            options.shuffle = !noShuffle
            options.policy = policy

            if let budgetBy {
                // The statistics the pruning used: of the dense model this one was pruned from.
                let stats = try StatisticsFile(path: budgetBy)
                try stats.requireComplete()
                let importance = try (0..<model.config.numLayers).map { l -> Double in
                    let count = try stats.blockCount(l).first ?? 0
                    guard count > 0 else { throw TrainingError("\(budgetBy): layer \(l) has no block statistics (count 0)") }
                    return (try stats.block(l, .angularSum).first ?? .nan) / Double(count)
                }
                let perLayer: [Int]
                do {
                    perLayer = try RankBudget.importanceGuided(
                        importance: importance, costPerRank: RankBudget.costPerRank(config: model.config, targets: projections),
                        rank: rank)
                } catch let e as TrainingError {
                    throw TrainingError("\(budgetBy): \(e.message)")  // the importances are the file's
                }
                options.ranks = perLayer.map { r in Projection.allCases.map { _ in r } }
                if !common.quiet { printError("finetune: ranks by block importance: \(perLayer.map(String.init).joined(separator: " "))") }
            }
            let adapters = LoRAAdapters(config: model.config, alpha: alpha, dropout: Float(dropout)) {
                options.rank(layer: $0, $1)
            }
            adapters.initialize(seed: seed)
            let runner = Runner(model: model, maxPositions: examples.map(\.tokens.count).max() ?? seqlen)
            try runner.keepLayers()
            let trainer: LoRATrainer
            do {
                trainer = try LoRATrainer(runner: runner, adapters: adapters, options: options, examples: examples)
            } catch let e as TrainingError {
                throw TrainingError("\(dataPath): \(e.message)")  // what it refuses is the examples
            }
            let run = FinetuneCheckpoint.run(options: options, modelFingerprint: try model.fingerprint(), data: data,
                                             trainExamples: examples.count)
            var evaluations: [(step: Int, loss: Double)] = []
            if let resume {
                evaluations = try FinetuneCheckpoint.resume(path: resume, trainer: trainer, run: run)
            }
            let checkpointPath = checkpoint ?? output.output.trimmingSuffix("/") + ".checkpoint"
            if !common.quiet {
                printError(String(format: "finetune: %d training examples (%@; %d held out), %d steps of %d, LoRA r %d α %g on %@: %d trainable parameters",
                                  examples.count, data.kind, heldOut.count, options.steps, batch, rank, alpha,
                                  projections.map(\.shortName).joined(separator: ","), adapters.count))
            }
            let progress = Progress("finetune", total: options.steps, quiet: common.quiet)
            progress.update(trainer.step)
            let started = Date()
            var processed = 0
            func evaluate() throws {
                let loss = try trainer.loss(of: heldOut)
                evaluations.append((trainer.step, loss))
                if !common.quiet {
                    printError(String(format: "finetune: step %d held-out loss %.4f perplexity %.3f", trainer.step, loss, exp(loss)))
                }
            }
            if let every = evalEvery, trainer.step == 0, every > 0, options.steps > 0 { try evaluate() }
            while trainer.step < options.steps {
                let k = trainer.step
                processed += trainer.batch(step: k).reduce(0) { $0 + examples[$1].tokens.count }
                let record = try trainer.runStep()
                let rate = Double(processed) / max(Date().timeIntervalSince(started), 1e-9)
                progress.detail = String(format: " loss %.4f lr %.2e %.0f tok/s", record.loss, record.learningRate, rate)
                progress.update(trainer.step)
                if let every = evalEvery, trainer.step % every == 0 || trainer.step == options.steps { try evaluate() }
                if let every = checkpointEvery, trainer.step % every == 0 {
                    try FinetuneCheckpoint.write(path: checkpointPath, trainer: trainer, run: run, evaluations: evaluations)
                }
            }
            progress.finish()
            let trainingSeconds = Date().timeIntervalSince(started)
            if adaptersOnly {
                try PEFTAdapters.write(adapters, options: options, directory: output.output, baseModel: nil)
            } else {
                var meta = standardMetadata(tool: "finetune")
                meta["finetune"] = run.keys.sorted().map { "\($0)=\(run[$0]!)" }.joined(separator: " ")
                let writing = Progress("finetune: writing", total: 0, unit: "tensors", quiet: common.quiet)
                try model.writeMerged(adapters, to: output.output, metadata: meta) { done, total in
                    writing.total = total
                    writing.update(done)
                }
                writing.finish()
            }
            if let plot {
                try writeText(LossPlot.svg(history: trainer.history, evaluations: evaluations,
                                           title: "finetune r \(rank), \(options.steps) steps of \(batch)"), to: plot)
            }
            if !common.quiet, let last = trainer.history.last {
                printError(String(format: "finetune: %d steps, last loss %.4f; training %.1f s, %.1f tokens/s; peak memory %.0f MB",
                                  trainer.step, last.loss, trainingSeconds, Double(processed) / max(trainingSeconds, 1e-9),
                                  peakMemoryMB()))
            }
        }
    }
}

extension String {
    func trimmingSuffix(_ s: String) -> String { hasSuffix(s) && count > s.count ? String(dropLast(s.count)) : self }
}

Finetune.runAsTool()
