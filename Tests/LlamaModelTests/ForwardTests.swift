import Foundation
import LlamaModel
import TensorIO
import TestSupport
import XCTest

/// The forward pass against the float64 plain-torch reference (scripts/reference/tiny_model.py),
/// whose uniform case equals transformers' LlamaForCausalLM.
final class ForwardTests: XCTestCase {
    func reference(_ name: String) throws -> (tokens: [[Int32]], logits: [Double], loss: [Double]) {
        let ref = try TensorFile(path: Fixtures.url("model/\(name)_ref.safetensors").path)
        let tokens = try ref.integers("tokens").map { Int32($0) }
        let T = tokens.count / 2
        return ([Array(tokens[0..<T]), Array(tokens[T...])], try ref.doubles("logits"), try ref.doubles("loss"))
    }

    /// `headRows`: an untied head read that many vocabulary rows at a time (nil: whole).
    func checkModel(_ name: String, headRows: Int? = nil) throws {
        let model = try Model.open(Fixtures.url("model/\(name).safetensors").path)
        let (windows, logits, loss) = try reference(name)
        let T = windows[0].count, V = model.config.vocabSize
        let runner = Runner(model: model, maxPositions: T)
        if let headRows { runner.headBlockLimit = 16 * model.config.hiddenSize * headRows }
        for (s, window) in windows.enumerated() {
            let mine = try runner.logits(window)
            assertAllClose(mine, Array(logits[(s * T * V)..<((s + 1) * T * V)]), atol: 2e-4, rtol: 1e-4,
                           "\(name) sequence \(s)")
        }
        // Both windows at once, as evaluate runs them: the loss per window.
        let nll = try runner.windowNLL(windows)
        assertAllClose(nll.map { $0 / Double(T - 1) }, loss, atol: 1e-5, rtol: 1e-5, "\(name) loss")
    }

    func testUniformModelWithAllBiasesMatchesReference() throws {
        try checkModel("tiny_uniform")
        try checkModel("tiny_uniform", headRows: 7)  // its untied head read 7 vocabulary rows at a time
        try checkModel("tiny_uniform", headRows: 1)
    }

    func testNonUniformModelWithEmptyLayersAndLlama3RopeMatchesReference() throws {
        let model = try Model.open(Fixtures.url("model/tiny_nonuniform.safetensors").path)
        XCTAssertEqual(model.config.headCounts, [4, 0, 6])
        XCTAssertEqual(model.config.ffnWidths, [40, 24, 0])
        XCTAssertNotNil(model.config.ropeScaling)
        try checkModel("tiny_nonuniform")
    }

    func testBatchingWindowsDoesNotChangeTheLoss() throws {
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let (windows, _, _) = try reference("tiny_uniform")
        let runner = Runner(model: model, maxPositions: 19)
        let together = try runner.windowNLL(windows)
        runner.batchRows = 19  // one window per batch
        let apart = try runner.windowNLL(windows)
        // sgemm blocks differently for other row counts, so equal up to float32 rounding.
        assertAllClose(together, apart, atol: 0, rtol: 1e-6)
        XCTAssertEqual(try runner.windowNLL(windows), apart, "same inputs, same bits")
    }

    /// An untied model's embedding is read a batch's rows at a time (never widened whole): the
    /// same hidden states as from the whole table; a tied one keeps its table for the head.
    func testUntiedEmbeddingIsReadByRows() throws {
        let untied = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let runner = Runner(model: untied, maxPositions: 8)
        XCTAssertNil(try runner.embeddingTable())
        let tokens: [Int32] = [5, 0, 5, Int32(untied.config.vocabSize - 1)]
        let C = untied.config.hiddenSize
        let byRows = try runner.embed(tokens, embedding: nil), whole = try runner.embed(tokens, embedding: try untied.embedding())
        XCTAssertEqual(Array(UnsafeBufferPointer(start: byRows.pointer, count: tokens.count * C)),
                       Array(UnsafeBufferPointer(start: whole.pointer, count: tokens.count * C)))
        XCTAssertThrowsError(try runner.embed([Int32(untied.config.vocabSize)], embedding: nil)) {
            XCTAssertEqual("\($0)", "token id \(untied.config.vocabSize) at position 0 is outside the vocabulary (\(untied.config.vocabSize))")
        }
        let tied = try Model.open(Fixtures.url("model/tiny_nonuniform.safetensors").path)
        XCTAssertEqual(try Runner(model: tied, maxPositions: 8).embeddingTable(), try tied.embedding())
    }

    /// A block split as sequential calibration runs it — up to down_proj on a copy, storing the
    /// residual (in memory, or in a temporary file), then the MLP half in place from it — gives the
    /// whole block's bits and taps.
    func testSplitBlockEqualsTheWholeBlock() throws {
        for name in ["tiny_uniform", "tiny_nonuniform"] {
            let model = try Model.open(Fixtures.url("model/\(name).safetensors").path)
            let (windows, _, _) = try reference(name)
            let T = windows[0].count, C = model.config.hiddenSize, rows = 2 * T
            let runner = Runner(model: model, maxPositions: T)
            runner.batchRows = T  // two batches
            for l in 0..<model.config.numLayers {
                let w = try model.layer(l)
                let whole = try runner.embed(windows[0] + windows[1], embedding: try model.embedding())
                let split = try runner.embed(windows[0] + windows[1], embedding: try model.embedding())
                var wholeTaps: [[Float]] = [], splitTaps: [[Float]] = [], events: [String] = []
                func record(_ into: inout [[Float]], _ e: LayerEvent) {
                    switch e {
                    case .tap(.attention(let input, let heads, let r), _):
                        into.append(Array(UnsafeBufferPointer(start: input, count: r * C)))
                        into.append(Array(UnsafeBufferPointer(start: heads, count: r * model.config.attentionOutputWidth(layer: l))))
                    case .tap(.mlp(let input, let hidden, let r), _):
                        into.append(Array(UnsafeBufferPointer(start: input, count: r * C)))
                        into.append(Array(UnsafeBufferPointer(start: hidden, count: r * model.config.ffnWidths[l])))
                    case .blockInput(let p, let first, let r), .blockOutput(let p, let first, let r):
                        into.append([Float(first)] + Array(UnsafeBufferPointer(start: p, count: r * C)))
                    }
                }
                try runner.runLayer(w, config: model.config, layer: l, x: whole, rows: rows, windowLength: T) { record(&wholeTaps, $0) }
                let residual = try ScratchFloats(count: rows * C, memoryLimit: l % 2 == 0 ? 1 << 30 : 0, name: "residual")
                try runner.runLayer(w, config: model.config, layer: l, x: split, rows: rows, windowLength: T, inPlace: false,
                                    part: .untilDown, residual: residual) { e in
                    if case .blockOutput = e { events.append("output") }
                    if case .tap = e { record(&splitTaps, e) }
                }
                XCTAssertEqual(events, [], "no block output before down_proj")
                var ends: [[Float]] = []
                try runner.runLayer(w, config: model.config, layer: l, x: split, rows: rows, windowLength: T,
                                    part: .mlp, residual: residual) { e in
                    if case .tap = e { return }
                    record(&ends, e)
                }
                XCTAssertEqual(Array(UnsafeBufferPointer(start: split.pointer, count: rows * C)),
                               Array(UnsafeBufferPointer(start: whole.pointer, count: rows * C)), "\(name) layer \(l)")
                XCTAssertEqual(splitTaps, wholeTaps.filter { $0.count != 1 + T * C }, "\(name) layer \(l) taps")
                XCTAssertEqual(ends, wholeTaps.filter { $0.count == 1 + T * C }, "\(name) layer \(l) block input and output")
            }
        }
    }
}

/// SmolLM2 logits on the first 64 WikiText-2 tokens against transformers (max abs error < 1e-3),
/// checked on the full-vocabulary logsumexp and argmax of every row, every 16th vocabulary id,
/// and each row's top 16.
final class SmolLM2LogitsTests: XCTestCase {
    func testFirst64TokensMatchTransformers() throws {
        let ref = try TensorFile(path: Fixtures.url("model/smollm2_logits64.safetensors").path)
        let ids = try ref.integers("input_ids").map { Int32($0) }
        XCTAssertEqual(ids.count, 64)
        let model = try Model.open(try Fixtures.requireModel())
        let V = model.config.vocabSize
        let logits = try Runner(model: model, maxPositions: 64).logits(ids)
        var lse: [Double] = [], argmax: [Int] = [], strided: [Float] = [], top: [Float] = []
        let topIDs = try ref.integers("top_ids")
        for t in 0..<64 {
            let row = Array(logits[(t * V)..<((t + 1) * V)])
            let m = Double(row.max()!)
            lse.append(m + log(row.reduce(0.0) { $0 + exp(Double($1) - m) }))
            argmax.append(row.firstIndex(of: row.max()!)!)
            strided += stride(from: 0, to: V, by: 16).map { row[$0] }
            top += (0..<16).map { row[topIDs[t * 16 + $0]] }
        }
        assertAllClose(lse, try ref.doubles("logsumexp"), atol: 1e-3, rtol: 0)
        XCTAssertEqual(argmax, try ref.integers("argmax"))
        assertAllClose(strided, try ref.floats("strided_logits"), atol: 1e-3, rtol: 0)
        assertAllClose(top, try ref.floats("top_logits"), atol: 1e-3, rtol: 0)
    }
}
