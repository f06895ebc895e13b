import Evaluation
import Foundation
import Kernels
import LlamaModel

/// prunekit-bench backward MODEL [--T 128] [--N 16] [--keep 0|1] [--threads t]
/// Forward and backward of the language-model loss over the first N windows of T tokens of
/// WikiText-2's test text (the windows bench/forward.sh and its transformers side use), in
/// batches of max(1, 2048/T) windows after one warm-up batch; prints tokens/s and the mean loss.
func backwardBench(_ modelPath: String, _ o: Options) throws {
    let T = o.int("T", 128), N = o.int("N", 16)
    let policy: ActivationPolicy = o.int("keep", 1) == 1 ? .keep : .recompute
    let model = try Model.open(modelPath)
    let ids = try model.tokenizer().encode(try EvaluationDataset("wikitext2").text())
    guard ids.count >= N * T else { throw UsageError("WikiText-2 has \(ids.count) tokens, fewer than \(N)×\(T)") }
    let windows = (0..<N).map { n in Array(ids[(n * T)..<((n + 1) * T)]) }
    let runner = Runner(model: model, maxPositions: T)
    try runner.keepLayers()
    var gradients = ModelGradients(zerosLike: model)
    let batch = max(1, 2048 / T)
    _ = try runner.lossAndGradients(Array(windows.prefix(batch)), into: &gradients, policy: policy)  // warm-up
    var loss = LossSum(sum: 0, count: 0)
    var failure: Error?
    let time = seconds {
        do {
            for start in stride(from: 0, to: N, by: batch) {
                let l = try runner.lossAndGradients(Array(windows[start..<min(start + batch, N)]), into: &gradients,
                                                    policy: policy)
                loss.sum += l.sum
                loss.count += l.count
            }
        } catch { failure = error }
    }
    if let failure { throw failure }
    print(String(format: "backward T=%d N=%d %@: %.1f tokens/s, %.3f s, mean loss %.6f", T, N, policy.rawValue,
                 Double(N * T) / time, time, loss.mean))
}
