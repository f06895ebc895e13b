import Foundation
import LlamaModel
import Pruning
import TensorIO
import TestSupport
import XCTest

/// Slicing equals masking: the sliced model computes what the dense model computes with the
/// dropped units' outputs zeroed (o_proj columns of dropped heads, down_proj columns of dropped
/// channels).
final class SlicingTests: XCTestCase {
    func write(_ path: String, config: LlamaConfig, tensors: [(String, [Float])], shapes: [String: [Int]]) throws {
        let writer = try ModelWriter(path: path, config: config, tensors: tensors.map { ($0.0, shapes[$0.0]!) },
                                     dtype: { _ in .F32 }, tokenizerJSON: nil, metadata: ["fingerprint": "test"])
        for (name, values) in tensors { try writer.write(name, values) }
        try writer.finish()
    }

    func check(model name: String, plan: PlanFile) throws {
        let model = try Model.open(Fixtures.url("model/\(name).safetensors").path)
        let c = model.config
        try plan.check(against: c, name: "plan")
        let dir = try Fixtures.temporaryDirectory()
        var sliced: [(String, [Float])] = [(TensorNames.embedding, try model.embedding())]
        var masked: [(String, [Float])] = [(TensorNames.embedding, try model.embedding())]
        var slicedShapes: [String: [Int]] = [TensorNames.embedding: model.shape(TensorNames.embedding)!]
        var maskedShapes = slicedShapes
        let sc = Slicing.config(c, plan: plan)
        for l in 0..<c.numLayers {
            let w = try model.layer(l)
            for (n, v) in Slicing.layer(l, weights: w, plan: plan.layers[l], config: c) {
                sliced.append((n, v))
                let H = sc.headCounts[l], Hkv = sc.kvHeadCounts[l], F = sc.ffnWidths[l]
                for p in Projection.allCases {
                    let (r, col) = TensorNames.projectionShape(p, C: c.hiddenSize, H: H, Hkv: Hkv, D: c.headDim, F: F)
                    slicedShapes[TensorNames.weight(l, p)] = [r, col]
                    slicedShapes[TensorNames.bias(l, p)] = [r]
                }
                slicedShapes[TensorNames.inputNorm(l)] = [c.hiddenSize]
                slicedShapes[TensorNames.postAttentionNorm(l)] = [c.hiddenSize]
            }
            for name in model.tensorNames where name.hasPrefix("model.layers.\(l).") {
                var v = try model.floats(name)
                let shape = model.shape(name)!
                if name == TensorNames.weight(l, .o) {
                    let keep = Set(plan.layers[l].keptHeads)
                    for i in 0..<shape[0] { for j in 0..<shape[1] where !keep.contains(j / c.headDim) { v[i * shape[1] + j] = 0 } }
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
            sliced.append((name, try model.floats(name)))
            masked.append((name, try model.floats(name)))
            slicedShapes[name] = model.shape(name)!
            maskedShapes[name] = model.shape(name)!
        }
        let a = dir.appendingPathComponent("sliced.st").path, b = dir.appendingPathComponent("masked.st").path
        try write(a, config: sc, tensors: sliced, shapes: slicedShapes)
        try write(b, config: c, tensors: masked, shapes: maskedShapes)
        let tokens = (0..<19).map { Int32(($0 * 7 + 3) % c.vocabSize) }
        let ours = try Runner(model: try Model.open(a), maxPositions: 19).logits(tokens)
        let reference = try Runner(model: try Model.open(b), maxPositions: 19).logits(tokens)
        assertAllClose(ours, reference, atol: 1e-5, rtol: 1e-4, name)
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
        XCTAssertNoThrow(try PlanFile(layers: bad[0]).check(against: c, name: "p"))
        XCTAssertThrowsError(try PlanFile(layers: bad[1]).check(against: c, name: "p")) {
            XCTAssertTrue("\($0)".contains("the same number of query heads"), "\($0)")
        }
        XCTAssertThrowsError(try PlanFile(layers: bad[2]).check(against: c, name: "p")) {
            XCTAssertTrue("\($0)".contains("a plan for 1 layers"), "\($0)")
        }
    }
}
