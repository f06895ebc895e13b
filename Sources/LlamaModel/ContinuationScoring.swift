import Foundation
import Kernels

// Log-likelihoods of continuations after a context, as lm-evaluation-harness's
// `_loglikelihood_tokens` computes them for multiple-choice tasks: the model reads
// context + continuation (without its last token); the continuation's log-likelihood is the sum,
// over its tokens, of log-softmax(logits)[token] at the position before it, and it is greedy when
// every one of its tokens is the argmax there.
//
// Dimensions: C hidden, V vocabulary. A request of P context tokens and continuations of n_c
// tokens occupies P + Σ(n_c − 1) packed rows: the context once, then each continuation's first
// n_c − 1 tokens (`PackedGroup`); continuation c's token 0 is predicted from the last context row.

/// A context and the continuations to score after it.
public struct ContinuationRequest: Sendable, Equatable {
    public var context: [Int32]
    public var continuations: [[Int32]]

    public init(context: [Int32], continuations: [[Int32]]) {
        self.context = context
        self.continuations = continuations
    }

    /// Packed rows this request takes.
    var rowCount: Int { context.count + continuations.reduce(0) { $0 + max($1.count - 1, 0) } }
}

public struct ContinuationScore: Sendable, Equatable {
    /// Σ log p(token | everything before it) over the continuation's tokens.
    public var logLikelihood: Double
    /// Every token of the continuation is the most likely one at its position.
    public var isGreedy: Bool

    public init(logLikelihood: Double, isGreedy: Bool) {
        self.logLikelihood = logLikelihood
        self.isGreedy = isGreedy
    }
}

extension Runner {
    /// Scores every continuation of every request; requests are packed into batches of about
    /// `batchRows` rows (a context runs once for all its continuations). `progress(done, total)`
    /// counts requests.
    public func score(_ requests: [ContinuationRequest], progress: ((Int, Int) -> Void)? = nil) throws
        -> [[ContinuationScore]]
    {
        for (i, r) in requests.enumerated() {
            guard !r.context.isEmpty, r.continuations.allSatisfy({ !$0.isEmpty }) else {
                throw RunnerError("request \(i): an empty context or continuation")
            }
            let longest = r.context.count + (r.continuations.map(\.count).max() ?? 0) - 1
            guard longest <= rotary.maxPositions else {
                throw RunnerError("request \(i): \(longest) tokens exceed the \(rotary.maxPositions) positions this runner holds")
            }
            for t in r.context + r.continuations.joined() where t < 0 || Int(t) >= config.vocabSize {
                throw RunnerError("request \(i): token id \(t) is outside the vocabulary (\(config.vocabSize))")
            }
        }
        let embedding = try embeddingTable()
        var out: [[ContinuationScore]] = []
        var first = 0
        while first < requests.count {
            var end = first + 1, rows = requests[first].rowCount
            while end < requests.count && rows + requests[end].rowCount <= batchRows {
                rows += requests[end].rowCount
                end += 1
            }
            out += try scoreBatch(Array(requests[first..<end]), embedding: embedding)
            first = end
            progress?(first, requests.count)
        }
        return out
    }

    /// One packed batch: every layer once over all its rows, then the head on the rows that
    /// predict continuation tokens.
    private func scoreBatch(_ requests: [ContinuationRequest], embedding: [Float]?) throws -> [[ContinuationScore]] {
        var tokens: [Int32] = [], groups: [PackedGroup] = []
        for r in requests {
            groups.append(PackedGroup(start: tokens.count, contextLength: r.context.count,
                                      continuationLengths: r.continuations.map { $0.count - 1 }))
            tokens += r.context
            for c in r.continuations { tokens += c.dropLast() }
        }
        let x = try embed(tokens, embedding: embedding)
        let scratch = BlockScratch()
        for l in 0..<config.numLayers {
            runBlock(try model.layer(l), x: x.pointer, rows: tokens.count, layout: .packed(groups), config: config,
                     layer: l, rotary: rotary, scratch: scratch)
        }
        // The rows that predict: per continuation, the last context row then its own rows.
        var predictors: [(row: Int, target: Int32, request: Int, continuation: Int)] = []
        for (i, (r, g)) in zip(requests, groups).enumerated() {
            var row = g.start + g.contextLength
            for (c, continuation) in r.continuations.enumerated() {
                predictors.append((g.start + g.contextLength - 1, continuation[0], i, c))
                for j in 1..<continuation.count { predictors.append((row + j - 1, continuation[j], i, c)) }
                row += continuation.count - 1
            }
        }
        let C = config.hiddenSize, V = config.vocabSize
        let gathered = Buffer(count: predictors.count * C)
        for (k, p) in predictors.enumerated() {
            (gathered.pointer + k * C).update(from: x.pointer + p.row * C, count: C)
        }
        var scores = requests.map { $0.continuations.map { _ in ContinuationScore(logLikelihood: 0, isGreedy: true) } }
        try head(gathered, rows: predictors.count, embedding: embedding) { first, count, logits in
            for k in 0..<count {
                let p = predictors[first + k], row = logits + k * V
                var target = p.target
                let nll = crossEntropy(logits: row, targets: &target, T: 1, V: V)[0]
                scores[p.request][p.continuation].logLikelihood -= nll
                if argmax(row, count: V) != Int(p.target) { scores[p.request][p.continuation].isGreedy = false }
            }
        }
        return scores
    }
}
