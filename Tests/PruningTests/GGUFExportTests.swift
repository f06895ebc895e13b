import Foundation
import Kernels
import LlamaModel
import Pruning
import TensorIO
import TestSupport
import XCTest

/// GGUF export: read back (our reader follows gguf-py), the same logits; per-layer widths as
/// llama.cpp's deci; what deci would compute differently is refused.
final class GGUFExportTests: XCTestCase {
    func logits(_ path: String, _ tokens: [Int32]) throws -> [Float] {
        try Runner(model: try Model.open(path), maxPositions: tokens.count).logits(tokens)
    }

    func testUniformAndPerLayerWidthsRoundTrip() throws {
        let dir = try Fixtures.temporaryDirectory()
        let source = Fixtures.url("model/tiny_uniform.safetensors").path
        // The tiny model has no tokenizer: give it SmolLM2's? Its vocabulary differs; use a model file
        // with a tokenizer instead — the tokenizer is only metadata for this check.
        let model = try Model.open(source)
        let tokens = (0..<19).map { Int32(($0 * 5 + 1) % model.config.vocabSize) }
        XCTAssertThrowsError(try model.exportGGUF(to: dir.appendingPathComponent("x.gguf").path, type: .f32)) {
            XCTAssertTrue("\($0)".contains("no tokenizer"), "\($0)")
        }
        let withTokenizer = dir.appendingPathComponent("tok.st").path
        try writeWithTokenizer(model, to: withTokenizer)
        let reference = try logits(withTokenizer, tokens)
        for type in GGUFExportType.allCases {
            let gguf = dir.appendingPathComponent("u-\(type.rawValue).gguf").path
            try Model.open(withTokenizer).exportGGUF(to: gguf, type: type)
            // Large tensors a block of rows at a time: the same file.
            XCTAssertTrue(try Model.open(withTokenizer).readsRowsAlone)
            let blocks = dir.appendingPathComponent("b-\(type.rawValue).gguf").path
            try Model.open(withTokenizer).exportGGUF(to: blocks, type: type, largeTensor: 40)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: blocks)), try Data(contentsOf: URL(fileURLWithPath: gguf)))
            let file = try GGUFFile(path: gguf)
            XCTAssertEqual(file.metadata["general.architecture"]?.string, "llama")
            let ours = try logits(gguf, tokens)
            switch type {
            case .f32: XCTAssertEqual(ours, reference)
            case .f16: assertAllClose(ours, reference, atol: 2e-2, rtol: 1e-2)
            case .q8_0: assertAllClose(ours, reference, atol: 1e-1, rtol: 5e-2)
            }
        }
        // Per-layer widths: slice layer 0 to one KV group and 40 channels.
        let plan = PlanFile(layers: [
            LayerPlan(keptHeads: [2, 3], keptKVHeads: [1], keptChannels: Array(0..<40)),
            LayerPlan(keptHeads: [0, 1, 2, 3], keptKVHeads: [0, 1], keptChannels: Array(0..<96)),
        ])
        let sliced = dir.appendingPathComponent("sliced.st").path
        try writeSliced(try Model.open(withTokenizer), plan: plan, to: sliced)
        let gguf = dir.appendingPathComponent("deci.gguf").path
        try Model.open(sliced).exportGGUF(to: gguf, type: .f32)
        let file = try GGUFFile(path: gguf)
        XCTAssertEqual(file.metadata["general.architecture"]?.string, "deci")
        XCTAssertEqual(file.metadata["deci.feed_forward_length"]?.ints, [40, 96])
        XCTAssertEqual(file.metadata["deci.attention.head_count"]?.ints, [2, 4])
        XCTAssertEqual(file.metadata["deci.attention.head_count_kv"]?.ints, [1, 2])
        XCTAssertEqual(try logits(gguf, tokens), try logits(sliced, tokens))
    }

    /// LLaMA-3 rope scaling goes in as llama.cpp's rope_freqs.weight: the divisor of each rotary
    /// frequency, equal to transformers' base over llama3 inverse frequencies
    /// (scripts/reference/rope_factors_reference.py).
    func testLlama3RopeScalingIsWrittenAsRopeFreqs() throws {
        let dir = try Fixtures.temporaryDirectory()
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let cases = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("export/rope_factors.json"))) as! [[String: Any]]
        let first = cases[0], scaling = first["rope_scaling"] as! [String: Any]
        XCTAssertEqual(first["head_dim"] as? Int, model.config.headDim)
        var config = model.config
        config.ropeTheta = first["rope_theta"] as! Double
        config.ropeScaling = Llama3RopeScaling(
            factor: scaling["factor"] as! Double, lowFreqFactor: scaling["low_freq_factor"] as! Double,
            highFreqFactor: scaling["high_freq_factor"] as! Double,
            originalMaxPositionEmbeddings: scaling["original_max_position_embeddings"] as! Int)
        let path = dir.appendingPathComponent("scaled.st").path
        try writeWithTokenizer(model, to: path, config: config)
        let gguf = dir.appendingPathComponent("scaled.gguf").path
        try Model.open(path).exportGGUF(to: gguf, type: .f32)
        let file = try GGUFFile(path: gguf)
        let tensor = try XCTUnwrap(file.tensor(named: "rope_freqs.weight"))
        XCTAssertEqual(tensor.shape, [8])
        assertAllClose(try file.dequantize(tensor), first["factors"] as! [Double], atol: 0, rtol: 1e-6, "rope_freqs")
        for c in cases {
            let s = c["rope_scaling"] as! [String: Any]
            let r = Llama3RopeScaling(
                factor: s["factor"] as! Double, lowFreqFactor: s["low_freq_factor"] as! Double,
                highFreqFactor: s["high_freq_factor"] as! Double,
                originalMaxPositionEmbeddings: s["original_max_position_embeddings"] as! Int)
            assertAllClose(llama3RopeFactors(headDim: c["head_dim"] as! Int, theta: c["rope_theta"] as! Double, scaling: r),
                           c["factors"] as! [Double], atol: 0, rtol: 1e-6, "\(s)")
        }
    }

    func testWhatDeciCannotComputeIsRefused() throws {
        // tiny_nonuniform: layer 1 has no heads but an o_proj bias; layer 2 has heads and no MLP.
        let dir = try Fixtures.temporaryDirectory()
        let model = try Model.open(Fixtures.url("model/tiny_nonuniform.safetensors").path)
        let path = dir.appendingPathComponent("t.st").path
        try writeWithTokenizer(model, to: path)
        XCTAssertThrowsError(try Model.open(path).exportGGUF(to: dir.appendingPathComponent("n.gguf").path, type: .f32)) {
            XCTAssertTrue("\($0)".contains("no heads but an o_proj bias"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("n.gguf").path))
    }

    /// A copy of `model` carrying a byte-level tokenizer of the 256 byte tokens (only its
    /// metadata matters here; the model's own vocabulary size stays in its configuration).
    func writeWithTokenizer(_ model: Model, to path: String, config: LlamaConfig? = nil) throws {
        var vocab: [String] = []
        var next: UInt32 = 0x100
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            let u = printable ? UInt32(b) : { defer { next += 1 }; return next }()
            vocab.append(String(Character(Unicode.Scalar(u)!)))
        }
        let entries = vocab.enumerated().map { "\"\(jsonEscape($0.element))\": \($0.offset)" }.joined(separator: ",")
        let json = """
            {"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},"post_processor":null,"decoder":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{\(entries)},"merges":[]}}
            """
        let writer = try ModelWriter(path: path, config: config ?? model.config, tensors: model.tensorNames.map { ($0, model.shape($0)!) },
                                     dtype: { _ in .F32 }, tokenizerJSON: json, metadata: ["fingerprint": "test"])
        for name in model.tensorNames { try writer.write(name, try model.floats(name)) }
        try writer.finish()
    }

    func jsonEscape(_ s: String) -> String { s == "\"" ? "\\\"" : s == "\\" ? "\\\\" : s }

    func writeSliced(_ model: Model, plan: PlanFile, to path: String) throws {
        var plan = plan
        plan.metadata["fingerprint"] = try model.fingerprint()
        try Slicing.write(model, plan: plan, to: path, metadata: [:])
    }
}
