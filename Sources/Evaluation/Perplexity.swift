import Foundation
import LlamaModel
import TensorIO
import Tokenization

/// Perplexity as the pruning literature computes it: the token stream cut into N = ⌊tokens/T⌋
/// non-overlapping windows of T tokens, perplexity = exp(mean negative log-likelihood over every
/// predicted position of every window), i.e. T − 1 predictions per window.
public struct PerplexityReport: Codable, Sendable {
    public var dataset: String
    public var seqlen: Int
    public var windows: Int
    public var tokensEvaluated: Int
    public var predictedPositions: Int
    public var datasetTokens: Int
    public var datasetTokensSHA256: String
    public var negativeLogLikelihood: Double
    public var perplexity: Double
    public var parameters: Int
    public var seconds: Double
    public var tokensPerSecond: Double

    enum CodingKeys: String, CodingKey {
        case dataset, seqlen, windows, perplexity, parameters, seconds
        case tokensEvaluated = "tokens_evaluated"
        case predictedPositions = "predicted_positions"
        case datasetTokens = "dataset_tokens"
        case datasetTokensSHA256 = "dataset_tokens_sha256"
        case negativeLogLikelihood = "nll"
        case tokensPerSecond = "tokens_per_second"
    }
}

/// A token stream: ids and the sha256 of their int32 little-endian bytes.
public struct TokenStream: Sendable {
    public var ids: [Int32]
    public var sha256: String

    public init(ids: [Int32]) {
        self.ids = ids
        var hash = SHA256()
        ids.map { $0.littleEndian }.withUnsafeBytes { hash.update($0) }
        sha256 = SHA256.hex(hash.finalize())
    }

    /// The text tokenised as `tokenizer(text)` does in transformers: special tokens (BOS) only
    /// if the tokenizer adds them.
    public init(text: String, tokenizer: Tokenizer) {
        self.init(ids: tokenizer.encode(text, addSpecialTokens: true))
    }

    /// The first `limit` (or all) non-overlapping windows of T tokens.
    public func windows(length T: Int, limit: Int?) -> [[Int32]] {
        let n = min(ids.count / T, limit ?? Int.max)
        return (0..<n).map { Array(ids[$0 * T..<($0 + 1) * T]) }
    }
}

public func evaluatePerplexity(
    runner: Runner, dataset: String, stream: TokenStream, windows: [[Int32]],
    progress: ((String, Int, Int) -> Void)? = nil
) throws -> PerplexityReport {
    guard let T = windows.first?.count else {
        throw DatasetError(.badData, "\(dataset): no windows to evaluate")
    }
    let start = Date()
    let sums = try runner.windowNLL(windows, progress: progress)
    let seconds = Date().timeIntervalSince(start)
    let total = sums.reduce(0, +)
    let predicted = windows.count * (T - 1)
    let mean = total / Double(max(predicted, 1))
    return PerplexityReport(
        dataset: dataset, seqlen: T, windows: windows.count,
        tokensEvaluated: windows.count * T, predictedPositions: predicted,
        datasetTokens: stream.ids.count, datasetTokensSHA256: stream.sha256,
        negativeLogLikelihood: mean, perplexity: exp(mean),
        parameters: runner.model.totalParameters, seconds: seconds,
        tokensPerSecond: seconds > 0 ? Double(windows.count * T) / seconds : 0)
}
