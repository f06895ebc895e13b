import Foundation
import LlamaModel
import TensorIO
import TestSupport
import XCTest

/// Configurations and checkpoints written by transformers 5, which keeps the rotary settings in
/// `rope_parameters` instead of the top-level `rope_theta` / `rope_scaling`
/// (scripts/reference/transformers5_reference.py wrote Tests/Fixtures/hf5).
final class TransformersFiveTests: XCTestCase {
    func config(_ json: String) throws -> LlamaConfig {
        try LlamaConfig.fromHuggingFace(Data(json.utf8))
    }

    func refusal(_ json: String) -> String {
        do {
            _ = try config(json)
            return "accepted"
        } catch { return "\(error)" }
    }

    func testSmolLM2ConfigurationAsTransformers5WritesIt() throws {
        let c = try LlamaConfig.fromHuggingFace(Data(contentsOf: Fixtures.url("hf5/smollm2_config.json")))
        XCTAssertEqual(c.ropeTheta, 100_000)
        XCTAssertNil(c.ropeScaling)
        XCTAssertEqual(c.headCounts, [Int](repeating: 9, count: 30))
        XCTAssertEqual(c.kvHeadCounts, [Int](repeating: 3, count: 30))
        XCTAssertTrue(c.tieWordEmbeddings)
    }

    /// Sharded BF16 checkpoints saved by transformers 5: the loss equals transformers' own on them
    /// (and differs clearly from the loss with the default θ, so a θ read wrongly would show).
    func testShardedBF16CheckpointsGiveTransformersLoss() throws {
        let reference = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Fixtures.url("hf5/reference.json"))) as! [String: Any]
        for name in ["tiny_default", "tiny_llama3"] {
            let r = reference[name] as! [String: Any]
            let model = try Model.open(Fixtures.url("hf5/\(name)").path)
            let rope = r["rope_parameters"] as! [String: Any]
            XCTAssertEqual(model.config.ropeTheta, rope["rope_theta"] as! Double, name)
            XCTAssertEqual(model.config.ropeScaling?.factor, rope["factor"] as? Double, name)
            XCTAssertEqual(model.config.ropeScaling?.originalMaxPositionEmbeddings,
                           rope["original_max_position_embeddings"] as? Int, name)
            let windows = (r["input_ids"] as! [[Int]]).map { $0.map(Int32.init) }
            let T = windows[0].count
            let nll = try Runner(model: model, maxPositions: T).windowNLL(windows).map { $0 / Double(T - 1) }
            assertAllClose(nll, r["nll"] as! [Double], atol: 0, rtol: 2e-6, name)
            let wrong = r["wrong_theta_nll"] as! [Double]
            XCTAssertGreaterThan(abs(nll[0] - wrong[0]), 1e-3, name)
        }
    }

    func testBothLayoutsAgreeAndContradictionsAreRefused() throws {
        let sizes = """
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "vocab_size": 97
            """
        let llama3 = #""factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32"#
        let four = try config("{\(sizes), \"rope_theta\": 500000.0, \"rope_scaling\": {\"rope_type\": \"llama3\", \(llama3)}}")
        let five = try config("{\(sizes), \"rope_parameters\": {\"rope_theta\": 500000.0, \"rope_type\": \"llama3\", \(llama3)}}")
        XCTAssertEqual(four, five)
        XCTAssertEqual(five.ropeTheta, 500_000)
        XCTAssertEqual(five.ropeScaling?.highFreqFactor, 4)
        // Both layouts stated, in agreement: accepted.
        XCTAssertEqual(try config("{\(sizes), \"rope_theta\": 500000.0, \"rope_parameters\": {\"rope_theta\": 500000.0, \"rope_type\": \"default\"}}").ropeTheta, 500_000)
        // Neither states θ: transformers' default.
        XCTAssertEqual(try config("{\(sizes)}").ropeTheta, 10_000)
        XCTAssertEqual(refusal("{\(sizes), \"rope_theta\": 10000.0, \"rope_parameters\": {\"rope_theta\": 100000.0, \"rope_type\": \"default\"}}"),
                       "rope_theta 10000.0 and rope_parameters.rope_theta 100000.0 contradict each other")
        XCTAssertEqual(refusal("{\(sizes), \"rope_parameters\": {\"rope_theta\": 100000.0, \"rope_type\": \"yarn\", \"factor\": 4.0}}"),
                       "rope_parameters.rope_type 'yarn' is not supported (default, llama3)")
        XCTAssertEqual(refusal("{\(sizes), \"rope_scaling\": {\"rope_type\": \"llama3\", \(llama3)}, \"rope_parameters\": {\"rope_theta\": 100000.0, \"rope_type\": \"default\"}}"),
                       "rope_scaling and rope_parameters describe different rotary scalings")
        XCTAssertEqual(refusal("{\(sizes), \"rope_parameters\": {\"rope_type\": \"llama3\", \"factor\": 8.0}}"),
                       "rope_parameters of rope_type llama3 lacks factor, low_freq_factor, high_freq_factor or original_max_position_embeddings")
        XCTAssertEqual(refusal("{\(sizes), \"rope_parameters\": {\"rope_theta\": 100000.0, \"rope_type\": \"default\", \"partial_rotary_factor\": 0.5}}"),
                       "rope_parameters.partial_rotary_factor 0.5 is not supported (only 1)")
        XCTAssertEqual(refusal("{\(sizes), \"bos_token_id\": \"<s>\"}").prefix(15), "'bos_token_id':")
    }
}
