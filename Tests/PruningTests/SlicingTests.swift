import Foundation
import LlamaModel
import Pruning
import TensorIO
import TestSupport
import XCTest

/// Slicing equals masking: the sliced model computes what the dense model computes with the
/// dropped units' outputs zeroed (o_proj columns of dropped heads, down_proj columns of dropped
/// channels, v_proj rows and bias entries of dropped value dimensions).
final class SlicingTests: XCTestCase {
    func write(_ path: String, config: LlamaConfig, tensors: [(String, [Float])], shapes: [String: [Int]]) throws {
        let writer = try ModelWriter(path: path, config: config, tensors: tensors.map { ($0.0, shapes[$0.0]!) },
                                     dtype: { _ in .F32 }, tokenizerJSON: nil, metadata: ["fingerprint": "test"])
        for (name, values) in tensors { try writer.write(name, values) }
        try writer.finish()
    }

    /// Returns the sliced model's path.
    @discardableResult
    func check(model name: String, plan: PlanFile) throws -> String {
        try check(path: Fixtures.url("model/\(name).safetensors").path, plan: plan, name: name)
    }

    @discardableResult
    func check(path: String, plan: PlanFile, name: String) throws -> String {
        let model = try Model.open(path)
        let c = model.config
        let dir = try Fixtures.temporaryDirectory()
        var masked: [(String, [Float])] = [(TensorNames.embedding, try model.embedding())]
        var maskedShapes: [String: [Int]] = [TensorNames.embedding: model.shape(TensorNames.embedding)!]
        for l in 0..<c.numLayers {
            for name in model.tensorNames where name.hasPrefix("model.layers.\(l).") {
                var v = try model.floats(name)
                let shape = model.shape(name)!
                if name == TensorNames.weight(l, .o), plan.layers[l].keptValueDims == nil, c.valueWidths == nil {
                    let keep = Set(plan.layers[l].keptHeads)
                    for i in 0..<shape[0] { for j in 0..<shape[1] where !keep.contains(j / c.headDim) { v[i * shape[1] + j] = 0 } }
                }
                if name == TensorNames.weight(l, .o), plan.layers[l].keptValueDims == nil, let widths = c.valueWidths?[l] {
                    // Narrowed value heads: head h = g·rep + j owns w_g columns after those of heads 0..<h.
                    let keep = Set(plan.layers[l].keptHeads), rep = c.headCounts[l] / c.kvHeadCounts[l]
                    var owner: [Int] = []
                    for h in 0..<c.headCounts[l] { owner += [Int](repeating: h, count: widths[h / rep]) }
                    for i in 0..<shape[0] { for j in 0..<shape[1] where !keep.contains(owner[j]) { v[i * shape[1] + j] = 0 } }
                }
                if let rows = plan.layers[l].keptValueDims, name == TensorNames.weight(l, .v) || name == TensorNames.bias(l, .v) {
                    let keep = Set(rows), width = shape.count == 2 ? shape[1] : 1
                    for r in 0..<shape[0] where !keep.contains(r) { for j in 0..<width { v[r * width + j] = 0 } }
                }
                if name == TensorNames.weight(l, .down) {
                    let keep = Set(plan.layers[l].keptChannels)
                    for i in 0..<shape[0] { for j in 0..<shape[1] where !keep.contains(j) { v[i * shape[1] + j] = 0 } }
                }
                masked.append((name, v))
                maskedShapes[name] = shape
            }
        }
        for name in [TensorNames.finalNorm] + (c.tieWordEmbeddings ? [] : [TensorNames.head]) {
            masked.append((name, try model.floats(name)))
            maskedShapes[name] = model.shape(name)!
        }
        let a = dir.appendingPathComponent("sliced.st").path, b = dir.appendingPathComponent("masked.st").path
        var plan = plan
        plan.metadata["fingerprint"] = try model.fingerprint()
        try Slicing.write(model, plan: plan, to: a, metadata: [:])
        try write(b, config: c, tensors: masked, shapes: maskedShapes)
        let tokens = (0..<19).map { Int32(($0 * 7 + 3) % c.vocabSize) }
        let ours = try Runner(model: try Model.open(a), maxPositions: 19).logits(tokens)
        let reference = try Runner(model: try Model.open(b), maxPositions: 19).logits(tokens)
        assertAllClose(ours, reference, atol: 1e-5, rtol: 1e-4, name)
        return a
    }

    func testValueDimensionSlicingEqualsMasking() throws {
        // FASP's V/O units: value rows of each KV head (16 values each) go; in layer 1 every value
        // of KV head 0 goes, so its heads and keys go too.
        let first = PlanFile(layers: [
            LayerPlan(keptHeads: [0, 1, 2, 3], keptKVHeads: [0, 1], keptChannels: Array(0..<96),
                      keptValueDims: [0, 3, 4, 9, 15, 16, 17, 18, 30]),
            LayerPlan(keptHeads: [2, 3], keptKVHeads: [1], keptChannels: Array(0..<50),
                      keptValueDims: Array(20..<32)),
        ])
        let sliced = try check(model: "tiny_uniform", plan: first)
        let c = try Model.open(sliced).config
        XCTAssertEqual(c.valueWidths, [[5, 4], [12]])
        XCTAssertEqual(c.attentionOutputWidth(layer: 0), 18)
        // Padded back to head_dim with zeros (convert --pad-values): a stock shape, the same logits.
        let padded = try Model.open(sliced).paddingValueHeads()
        XCTAssertNil(padded.config.valueWidths)
        XCTAssertEqual(padded.shape("model.layers.1.self_attn.o_proj.weight"), [64, 32])
        let paddedPath = try Fixtures.temporaryDirectory().appendingPathComponent("padded.st").path
        try padded.write(to: paddedPath, weightType: .f32, metadata: [:])
        let tokens = (0..<23).map { Int32(($0 * 11 + 5) % c.vocabSize) }
        assertAllClose(try Runner(model: try Model.open(paddedPath), maxPositions: 23).logits(tokens),
                       try Runner(model: try Model.open(sliced), maxPositions: 23).logits(tokens),
                       atol: 1e-5, rtol: 1e-4, "padded")
        // Slicing the narrowed model again: a KV head, then single values.
        try check(path: sliced, plan: PlanFile(layers: [
            LayerPlan(keptHeads: [2, 3], keptKVHeads: [1], keptChannels: Array(0..<96)),
            LayerPlan(keptHeads: [0, 1], keptKVHeads: [0], keptChannels: Array(0..<50), keptValueDims: [1, 2, 11]),
        ]), name: "narrowed tiny_uniform")
    }

    func testSlicingEqualsMasking() throws {
        // Uniform (4 heads, 2 KV heads, F 96): drop KV group 1 in layer 0, one head per group in layer 1.
        try check(model: "tiny_uniform", plan: PlanFile(layers: [
            LayerPlan(keptHeads: [0, 1], keptKVHeads: [0], keptChannels: Array(stride(from: 0, to: 96, by: 3))),
            LayerPlan(keptHeads: [1, 2], keptKVHeads: [0, 1], keptChannels: Array(10..<90)),
        ]))
        // Per-layer widths (heads 4/0/6, KV 2/0/3, F 40/24/0): all attention of layer 0 goes.
        try check(model: "tiny_nonuniform", plan: PlanFile(layers: [
            LayerPlan(keptHeads: [], keptKVHeads: [], keptChannels: [0, 5, 39]),
            LayerPlan(keptHeads: [], keptKVHeads: [], keptChannels: Array(0..<12)),
            LayerPlan(keptHeads: [0, 2, 4], keptKVHeads: [0, 1, 2], keptChannels: []),
        ]))
    }

    func testInvalidPlansAreRefused() throws {
        let c = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path).config
        let bad: [[LayerPlan]] = [
            [LayerPlan(keptHeads: [0, 2], keptKVHeads: [0, 1], keptChannels: [0]), LayerPlan(keptHeads: [0, 1], keptKVHeads: [0], keptChannels: [0])],
            [LayerPlan(keptHeads: [0, 1, 2], keptKVHeads: [0, 1], keptChannels: [0]), LayerPlan(keptHeads: [0, 1], keptKVHeads: [0], keptChannels: [0])],
            [LayerPlan(keptHeads: [0, 1], keptKVHeads: [0], keptChannels: [5, 2])],
        ]
        XCTAssertNoThrow(try PlanFile(layers: bad[0]).check(against: c))
        XCTAssertThrowsError(try PlanFile(layers: bad[1]).check(against: c)) {
            XCTAssertTrue("\($0)".contains("the same number of query heads"), "\($0)")
        }
        XCTAssertThrowsError(try PlanFile(layers: bad[2]).check(against: c)) {
            XCTAssertTrue("\($0)".contains("a plan for 1 layers"), "\($0)")
        }
        // Value rows of a dropped KV head, unsorted, out of range.
        for rows in [[0, 20], [3, 1], [0, 32]] {
            let plan = PlanFile(layers: [LayerPlan(keptHeads: [0, 1], keptKVHeads: [0], keptChannels: [0], keptValueDims: rows),
                                         LayerPlan(keptHeads: [0, 1], keptKVHeads: [0], keptChannels: [0])])
            XCTAssertThrowsError(try plan.check(against: c), "\(rows)") {
                XCTAssertTrue("\($0)".contains("kept value rows"), "\($0)")
            }
        }
    }
}
