import Foundation
import LlamaModel

/// What a LoRA run is: everything that decides its result (a checkpoint of one run resumes only
/// the same run).
public struct FinetuneOptions: Sendable, Equatable {
    /// LoRA rank and α of every adapted projection (PEFT's `r`, `lora_alpha`; s = α/r).
    public var rank = 8
    public var alpha = 16.0
    /// PEFT's `lora_dropout` on the adapters' input.
    public var dropout: Float = 0.05
    public var targets: [Projection] = Projection.allCases
    /// Per layer and projection ranks (`--budget-by`); nil: `rank` everywhere.
    public var ranks: [[Int]]?
    /// Optimizer steps (each of `batch` examples, in micro-batches of `microBatch`).
    public var steps = 1
    public var batch = 64
    public var microBatch = 4
    public var learningRate = 1e-4
    public var warmup = 0
    public var schedule = LearningRateSchedule.linear
    public var weightDecay = 0.0
    /// `clip_grad_norm_` bound (transformers' `max_grad_norm` 1.0); 0: no clipping.
    public var maxGradNorm = 1.0
    public var seed: UInt64 = 0
    /// Each epoch in its own order drawn from the seed (transformers' default); false: the
    /// examples in file order.
    public var shuffle = true
    public var policy = ActivationPolicy.keep

    public init() {}

    /// The rank of layer l's projection p.
    public func rank(layer l: Int, _ p: Projection) -> Int {
        guard targets.contains(p) else { return 0 }
        return ranks.map { $0[l][p.index] } ?? rank
    }

    /// Every field, as text, for a checkpoint's record of its run.
    public var record: [String: String] {
        [
            "rank": "\(rank)", "alpha": "\(alpha)", "dropout": "\(dropout)",
            "targets": targets.map(\.shortName).joined(separator: ","),
            "ranks": ranks.map { $0.map { $0.map(String.init).joined(separator: " ") }.joined(separator: ";") } ?? "",
            "steps": "\(steps)", "batch": "\(batch)", "micro_batch": "\(microBatch)", "lr": "\(learningRate)",
            "warmup": "\(warmup)", "schedule": schedule.rawValue, "weight_decay": "\(weightDecay)",
            "max_grad_norm": "\(maxGradNorm)", "seed": "\(seed)", "shuffle": "\(shuffle)",
        ]
    }
}

/// One optimizer step's record.
public struct StepRecord: Sendable, Equatable {
    public var step: Int  // 1-based: the step just taken
    public var loss: Double  // the batch's mean loss before the update
    public var learningRate: Double
    public var gradientNorm: Double  // before clipping
    public var tokens: Int  // counted positions of the batch
}

/// LoRA fine-tuning of a frozen model: AdamW on the adapters, batches drawn in a fixed
/// per-epoch order from the seed, gradient accumulation over micro-batches, the loss the mean
/// over every counted position of the batch (transformers' `num_items_in_batch` loss).
///
/// Deterministic for a thread count: the data order, dropout masks and initial adapters are
/// functions of the seed and the step, so that a run resumed from a checkpoint (adapters, the
/// optimizer's moments and step) continues with the same bits as one never interrupted.
public final class LoRATrainer {
    public let runner: Runner
    public let adapters: LoRAAdapters
    public let optimizer: AdamW
    public let options: FinetuneOptions
    public let examples: [TrainingExample]
    public let stepsPerEpoch: Int
    public private(set) var history: [StepRecord] = []

    /// - Throws: when there are fewer examples than one batch.
    public init(runner: Runner, adapters: LoRAAdapters, options: FinetuneOptions, examples: [TrainingExample]) throws {
        precondition(options.batch > 0 && options.microBatch > 0 && options.batch % options.microBatch == 0)
        guard examples.count >= options.batch else {
            throw TrainingError("\(examples.count) training examples are fewer than one batch of \(options.batch)")
        }
        guard examples.contains(where: { $0.counted > 0 }) else {
            throw TrainingError("no training example has a position to learn (every target is masked)")
        }
        self.runner = runner
        self.adapters = adapters
        self.options = options
        self.examples = examples
        stepsPerEpoch = examples.count / options.batch
        optimizer = AdamW(count: adapters.count)
        optimizer.weightDecay = Float(options.weightDecay)
    }

    /// Optimizer steps taken.
    public var step: Int { optimizer.steps }

    /// Continues a run from a checkpoint's state.
    public func restore(step: Int, parameters: [Float], m: [Float], v: [Float], history: [StepRecord]) {
        precondition(parameters.count == adapters.count)
        adapters.parameters.update(from: parameters, count: adapters.count)
        optimizer.restore(steps: step, m: m, v: v)
        self.history = history
    }

    /// The examples of optimizer step k: batch k mod E of epoch ⌊k/E⌋'s order (E steps an
    /// epoch; a last partial batch is left out), the order a Fisher–Yates shuffle from the seed
    /// and the epoch (or the file's order without `shuffle`).
    public func batch(step k: Int) -> [Int] {
        let epoch = k / stepsPerEpoch, position = k % stepsPerEpoch
        var order = Array(examples.indices)
        guard options.shuffle else { return Array(order[(position * options.batch)..<((position + 1) * options.batch)]) }
        var rng = SplitMix64(seed: options.seed ^ (0xE90C_0000_0000_0000 &+ UInt64(epoch)))
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.next(below: i + 1)) }
        return Array(order[(position * options.batch)..<((position + 1) * options.batch)])
    }

    /// Pads examples to their longest with token 0 and target −1 (right padding is exact under
    /// causal attention: no counted position sees a pad).
    static func padded(_ batch: [TrainingExample]) -> (windows: [[Int32]], targets: [[Int32]]) {
        let T = max(2, batch.map(\.tokens.count).max() ?? 2)
        return (batch.map { $0.tokens + [Int32](repeating: 0, count: T - $0.tokens.count) },
                batch.map { $0.targets + [Int32](repeating: -1, count: T - $0.targets.count) })
    }

    /// Takes optimizer step `step` (the next one): gradients of the batch's loss, clipping,
    /// AdamW at the schedule's rate.
    @discardableResult
    public func runStep() throws -> StepRecord {
        let k = step
        let chosen = batch(step: k).map { examples[$0] }
        let counted = chosen.reduce(0) { $0 + $1.counted }
        guard counted > 0 else { throw TrainingError("step \(k + 1): no position of the batch counts in the loss") }
        adapters.zeroGradients()
        adapters.training = true
        var sum = 0.0
        for (m, first) in stride(from: 0, to: chosen.count, by: options.microBatch).enumerated() {
            let micro = Array(chosen[first..<(first + options.microBatch)])
            let (windows, targets) = LoRATrainer.padded(micro)
            adapters.dropoutKey = dropoutKey(step: k, microBatch: m)
            sum += try runner.lossAndAdapterGradients(windows, targets: targets, adapters: adapters,
                                                      policy: options.policy,
                                                      positionWeight: 1 / Float(counted)).sum
        }
        let loss = sum / Double(counted)
        guard loss.isFinite else {
            throw TrainingError("the loss is \(loss) at step \(k + 1): training stopped (the last checkpoint, if any, is kept)")
        }
        let norm = clipGradientNorm(adapters.gradients, count: adapters.count, maxNorm: Float(options.maxGradNorm))
        guard norm.isFinite else {
            throw TrainingError("the gradient norm is \(norm) at step \(k + 1): training stopped (the last checkpoint, if any, is kept)")
        }
        let lr = options.learningRate * options.schedule.multiplier(step: k, of: options.steps, warmup: options.warmup)
        optimizer.step(parameters: adapters.parameters, gradients: adapters.gradients, lr: Float(lr))
        let record = StepRecord(step: k + 1, loss: loss, learningRate: lr, gradientNorm: norm, tokens: counted)
        history.append(record)
        return record
    }

    func dropoutKey(step k: Int, microBatch m: Int) -> UInt64 {
        var rng = SplitMix64(seed: options.seed ^ (UInt64(k) << 20) ^ UInt64(m))
        return rng.next()
    }

    /// The mean loss of `examples` under the current adapters (no dropout), in micro-batches.
    public func loss(of examples: [TrainingExample]) throws -> Double {
        var sum = 0.0, count = 0
        for first in stride(from: 0, to: examples.count, by: options.microBatch) {
            let (windows, targets) = LoRATrainer.padded(Array(examples[first..<min(first + options.microBatch, examples.count)]))
            let l = try runner.loss(windows, targets: targets, adapters: adapters)
            sum += l.sum
            count += l.count
        }
        return sum / Double(max(count, 1))
    }
}
