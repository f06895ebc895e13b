import Foundation
import LlamaModel
import TestSupport
import XCTest

/// Incremental decoding: the logits through the key/value cache equal the full forward pass's at
/// every position, for every model shape the tools make (biases, per-layer widths with empty
/// layers, LLaMA-3 rope scaling, value heads narrowed by V/O pruning).
final class GenerationTests: XCTestCase {
    func checkCachedLogits(_ path: String, name: String) throws {
        let model = try Model.open(path)
        let V = model.config.vocabSize
        let tokens = (0..<17).map { Int32(($0 * 5 + 2) % V) }
        let runner = Runner(model: model, maxPositions: 32)
        let full = try runner.logits(tokens)
        let layers = try runner.loadLayers()
        let cache = KVCache(config: model.config, capacity: 32)
        // A prompt of 5, single tokens, a chunk of 3 at once, single tokens again.
        var position = 0
        for chunk in [5, 1, 1, 3, 1, 1, 1, 1, 1, 1, 1] {
            let logits = try runner.step(Array(tokens[position..<(position + chunk)]), cache: cache, layers: layers,
                                         embedding: try model.embedding())
            position += chunk
            assertAllClose(logits, Array(full[((position - 1) * V)..<(position * V)]), atol: 2e-5, rtol: 1e-4,
                           "\(name) position \(position - 1)")
        }
        XCTAssertEqual(cache.length, 17)
        XCTAssertThrowsError(try runner.step([1], cache: KVCache(config: model.config, capacity: 0), layers: layers,
                                             embedding: try model.embedding()))
    }

    func testCachedLogitsEqualTheFullForwardPass() throws {
        try checkCachedLogits(Fixtures.url("model/tiny_uniform.safetensors").path, name: "tiny_uniform")
        try checkCachedLogits(Fixtures.url("model/tiny_nonuniform.safetensors").path, name: "tiny_nonuniform")
    }

    /// A V/O-pruned model (narrowed value heads), made by slicing the tiny model.
    func testCachedLogitsWithNarrowedValueHeads() throws {
        let path = try Fixtures.temporaryDirectory().appendingPathComponent("narrow.st").path
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        var config = model.config
        config = config.withValueWidths([[5, 12], [16, 3]])
        // Keep the first w_g value rows of each KV head and the o_proj columns that read them.
        let writer = try ModelWriter(path: path, config: config,
                                     tensors: model.tensorNames.map { ($0, TensorNames.expectedShape($0, config)!) },
                                     dtype: { _ in .F32 }, tokenizerJSON: nil, metadata: ["fingerprint": "t"])
        for name in model.tensorNames {
            var values = try model.floats(name)
            if let (l, p, isBias) = TensorNames.projection(of: name), p == .v || p == .o {
                let widths = config.valueWidths![l], D = config.headDim, C = config.hiddenSize
                let rows = widths.enumerated().flatMap { g, w in (g * D)..<(g * D + w) }
                if p == .v {
                    let width = isBias ? 1 : C
                    values = rows.flatMap { values[($0 * width)..<(($0 + 1) * width)] }
                } else if !isBias {
                    let rep = config.headCounts[l] / config.kvHeadCounts[l], inF = config.headCounts[l] * D
                    let columns = (0..<config.headCounts[l]).flatMap { h in (h * D)..<(h * D + widths[h / rep]) }
                    values = (0..<C).flatMap { i in columns.map { values[i * inF + $0] } }
                }
            }
            try writer.write(name, values)
        }
        try writer.finish()
        try checkCachedLogits(path, name: "narrowed values")
    }

    /// A model too large to keep (`keepLimit`) is read layer by layer on every step: the same tokens.
    func testGenerationReadingLayersEveryStepEqualsKeptLayers() throws {
        let model = try Model.open(Fixtures.url("model/tiny_nonuniform.safetensors").path)
        let kept = Runner(model: model, maxPositions: 32)
        let streamed = Runner(model: model, maxPositions: 32)
        streamed.keepLimit = kept.keptBytes - 1
        XCTAssertTrue(try kept.keepLayers())
        XCTAssertFalse(try streamed.keepLayers())
        XCTAssertNil(streamed.keptLayers)
        let prompt: [Int32] = [3, 1, 4, 1, 5]
        let sampling = Sampling(temperature: 0.8, topP: 0.9, seed: 7)
        XCTAssertEqual(try streamed.generate(prompt: prompt, count: 12, sampling: sampling),
                       try kept.generate(prompt: prompt, count: 12, sampling: sampling))
    }

    /// Greedy tokens equal transformers' `generate` on SmolLM2 (a near-tie, margin < 1e-3, may go
    /// either way and ends the comparison of that prompt).
    func testGreedyTokensEqualTransformers() throws {
        let fixture = Fixtures.url("generate/smollm2_greedy.json")
        let reference = try JSONSerialization.jsonObject(with: Data(contentsOf: fixture)) as! [String: Any]
        let model = try Model.open(try Fixtures.requireModel())
        let runner = Runner(model: model, maxPositions: 1024)
        for case let p as [String: Any] in reference["prompts"] as! [Any] {
            let prompt = (p["prompt_ids"] as! [Int]).map(Int32.init)
            let expected = p["generated_ids"] as! [Int]
            let margins = p["margins"] as! [Double]
            #if DEBUG
            let count = 4
            #else
            let count = expected.count
            #endif
            let ours = try runner.generate(prompt: prompt, count: count).map(Int.init)
            for i in 0..<count {
                if ours[i] != expected[i] {
                    XCTAssertLessThan(margins[i], 1e-3, "prompt \(p["prompt"] ?? "") step \(i): \(ours) vs \(expected)")
                    break
                }
            }
        }
    }
}
