import Foundation
import Kernels
import LlamaModel
import TestSupport
import XCTest

/// Continuation log-likelihoods from the packed pass equal those read off the full forward pass of
/// each `context + continuation` on its own (log-softmax at the position before each token).
final class ContinuationScoringTests: XCTestCase {
    func direct(_ runner: Runner, context: [Int32], continuation: [Int32], V: Int) throws -> ContinuationScore {
        let tokens = context + continuation
        let logits = try runner.logits(Array(tokens.dropLast()))
        var total = 0.0, greedy = true
        for (j, t) in continuation.enumerated() {
            let row = Array(logits[((context.count - 1 + j) * V)..<((context.count + j) * V)]).map(Double.init)
            let m = row.max()!
            let lse = m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
            total += row[Int(t)] - lse
            if row.firstIndex(of: m)! != Int(t) { greedy = false }
        }
        return ContinuationScore(logLikelihood: total, isGreedy: greedy)
    }

    func testPackedScoresEqualEachSequenceAlone() throws {
        for name in ["tiny_uniform", "tiny_nonuniform"] {
            let model = try Model.open(Fixtures.url("model/\(name).safetensors").path)
            let V = model.config.vocabSize
            let runner = Runner(model: model, maxPositions: 32)
            runner.batchRows = 20  // several batches
            func ids(_ n: Int, _ seed: Int) -> [Int32] { (0..<n).map { Int32(($0 * 7 + seed * 13 + 1) % V) } }
            let requests = [
                ContinuationRequest(context: ids(6, 1), continuations: [ids(3, 2), ids(1, 3), ids(5, 4)]),
                ContinuationRequest(context: ids(1, 5), continuations: [ids(2, 6)]),
                ContinuationRequest(context: ids(11, 7), continuations: [ids(4, 8), ids(4, 9)]),
            ]
            let scores = try runner.score(requests)
            for (r, s) in zip(requests, scores) {
                for (c, score) in zip(r.continuations, s) {
                    let expected = try direct(runner, context: r.context, continuation: c, V: V)
                    XCTAssertEqual(score.logLikelihood, expected.logLikelihood, accuracy: 2e-5 * max(1, abs(expected.logLikelihood)), name)
                    XCTAssertEqual(score.isGreedy, expected.isGreedy, name)
                }
            }
            // The greedy continuation of length 1 is greedy; refusals for what cannot be scored.
            let logits = try runner.logits(ids(6, 1))
            let last = Array(logits[(5 * V)...])
            let argmax = Int32(last.firstIndex(of: last.max()!)!)
            XCTAssertTrue(try runner.score([ContinuationRequest(context: ids(6, 1), continuations: [[argmax]])])[0][0].isGreedy)
            XCTAssertThrowsError(try runner.score([ContinuationRequest(context: [], continuations: [[1]])]))
            XCTAssertThrowsError(try runner.score([ContinuationRequest(context: [1], continuations: [[Int32(V)]])]))
            XCTAssertThrowsError(try runner.score([ContinuationRequest(context: ids(30, 1), continuations: [ids(4, 1)])]))
        }
    }
}
