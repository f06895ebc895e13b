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
    if let w = sums.firstIndex(where: { !$0.isFinite }) {
        throw DatasetError(.badData, "\(runner.model.path): the loss of window \(w) is \(sums[w]) (NaN or infinite weights or activations)")
    }
    return PerplexityReport(
        dataset: dataset, seqlen: T, windows: windows.count,
        tokensEvaluated: windows.count * T, predictedPositions: predicted,
        datasetTokens: stream.ids.count, datasetTokensSHA256: stream.sha256,
        negativeLogLikelihood: mean, perplexity: exp(mean),
        parameters: runner.model.totalParameters, seconds: seconds,
        tokensPerSecond: seconds > 0 ? Double(windows.count * T) / seconds : 0)
}

/// The windows `evaluate` scores: the exact windows of a tensor file (`--tokens`), or a dataset's
/// text tokenised by the model's tokenizer and cut into windows of T.
public struct PerplexityWindows {
    public var name: String
    public var stream: TokenStream
    public var windows: [[Int32]]

    /// Exact windows: an integer tensor `tokens` [N, T] whose ids lie in the vocabulary.
    public init(tokensFile path: String, vocabularySize: Int, limit: Int?) throws {
        let file = try TensorFile(path: path)
        let path = file.name  // "<stdin>" for "-"
        guard let entry = file.header.entry("tokens"), entry.shape.count == 2 else {
            throw DatasetError(.badData, "\(path): no integer tensor 'tokens' of shape [N, T]")
        }
        let ids = try file.integers("tokens")
        let (N, T) = (entry.shape[0], entry.shape[1])
        guard N > 0, T >= 2 else {
            throw DatasetError(.badData, "\(path): 'tokens' has shape \(entry.shape); need N ≥ 1, T ≥ 2")
        }
        if let i = ids.firstIndex(where: { $0 < 0 || $0 >= vocabularySize }) {
            throw DatasetError(.badData, "\(path): token id \(ids[i]) at [\(i / T), \(i % T)] is outside the vocabulary (\(vocabularySize))")
        }
        name = path
        stream = TokenStream(ids: ids.map { Int32($0) })
        windows = stream.windows(length: T, limit: limit)
    }

    /// A dataset (wikitext2, ptb, c4 or a text file) tokenised by `model`'s tokenizer; with
    /// `dumpTokens`, its ids are also written there (int32 tensor `tokens` [1, n]) with `metadata`.
    public init(dataset: EvaluationDataset, model: Model, length T: Int, limit: Int?,
                dumpTokens: String? = nil, metadata: [String: String] = [:]) throws {
        let text = try dataset.text()
        guard !text.isEmpty else { throw DatasetError(.badData, "\(dataset.described()): the text is empty") }
        let tokenizer = try model.tokenizer()
        name = dataset.name
        stream = TokenStream(text: text, tokenizer: tokenizer)
        windows = stream.windows(length: T, limit: limit)
        guard !windows.isEmpty else {
            throw DatasetError(.badData, "\(dataset.described()): \(stream.ids.count) tokens, fewer than one window of \(T)")
        }
        if let dumpTokens {  // after the checks: a refused dataset writes nothing
            try writeTensorFile(
                path: dumpTokens,
                tensors: [(TensorEntry(name: "tokens", dtype: .I32, shape: [1, stream.ids.count]),
                           stream.ids.withUnsafeBytes { Array($0) })],
                metadata: metadata.merging(["dataset": dataset.name, "sha256": stream.sha256]) { $1 })
        }
    }
}

extension PerplexityReport {
    /// The report as `evaluate` prints it on standard error, one "key  value" line each.
    public func table(model: String) -> [String] {
        let rows: [(String, String)] = [
            ("model", model),
            ("dataset", dataset),
            ("perplexity", String(format: "%.4f", perplexity)),
            ("windows × T", "\(windows) × \(seqlen)"),
            ("tokens evaluated", "\(tokensEvaluated) of \(datasetTokens)"),
            ("token ids sha256", datasetTokensSHA256),
            ("parameters", "\(parameters)"),
            ("tokens/s", String(format: "%.1f", tokensPerSecond)),
        ]
        let width = rows.map { $0.0.count }.max() ?? 0
        return rows.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }
    }
}
