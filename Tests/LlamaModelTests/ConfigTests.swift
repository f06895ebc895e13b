import Foundation
import LlamaModel
import TensorIO
import XCTest

final class ConfigTests: XCTestCase {
    func smallConfig() throws -> LlamaConfig {
        try LlamaConfig(hiddenSize: 48, numLayers: 3, headDim: 8, headCounts: [4, 0, 6],
                        kvHeadCounts: [2, 0, 3], ffnWidths: [40, 24, 0], vocabSize: 61,
                        rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 128,
                        tieWordEmbeddings: true, bosTokenID: 1, eosTokenID: 2)
    }

    func testJSONRoundTripIsStableAndExact() throws {
        let c = try smallConfig()
        let text = try c.jsonString()
        XCTAssertEqual(try LlamaConfig.fromJSON(text), c)
        XCTAssertEqual(try LlamaConfig.fromJSON(text).jsonString(), text)
        XCTAssertTrue(text.contains("\"head_counts\":[4,0,6]"), text)
        XCTAssertTrue(text.contains("\"rope_scaling\":null"), text)
    }

    func testLayerLinearParametersCountsEveryProjection() throws {
        let c = try smallConfig()
        // q,o: 2·C·D·H; k,v: 2·C·D·Hkv; gate, up, down: 3·C·F.
        let expected = (2 * 48 * 8 * (4 + 2) + 3 * 48 * 40) + (3 * 48 * 24) + (2 * 48 * 8 * (6 + 3))
        XCTAssertEqual(c.layerLinearParameters(), expected)
    }

    func testInvalidConfigurationsAreRefusedWithTheReason() {
        func message(_ json: String) -> String {
            do {
                _ = try LlamaConfig.fromJSON(json)
                return "accepted"
            } catch { return "\(error)" }
        }
        let base: [String: Any] = [
            "architecture": "llama", "hidden_size": 48, "num_hidden_layers": 2, "head_dim": 8,
            "head_counts": [4, 4], "kv_head_counts": [2, 2], "ffn_widths": [16, 16],
            "vocab_size": 10, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "max_position_embeddings": 64, "tie_word_embeddings": true,
        ]
        func with(_ key: String, _ value: Any?) -> String {
            var d = base
            d[key] = value
            return String(decoding: try! JSONSerialization.data(withJSONObject: d), as: UTF8.self)
        }
        XCTAssertEqual(message(with("head_counts", [4])), "head_counts has 1 entries for 2 layers")
        XCTAssertEqual(message(with("kv_head_counts", [3, 2])),
                       "layer 0: 4 heads are not a multiple of 3 KV heads")
        XCTAssertEqual(message(with("kv_head_counts", [0, 2])), "layer 0 has 4 heads but 0 KV heads")
        XCTAssertEqual(message(with("head_dim", 7)), "head_dim must be positive, even and at most 1024, got 7")
        XCTAssertEqual(message(with("num_hidden_layers", 4_294_967_295)), "num_hidden_layers must be in 1…1024, got 4294967295")
        XCTAssertEqual(message(with("hidden_size", 1 << 20)), "hidden_size must be in 1…131072, got 1048576")
        XCTAssertEqual(message(with("vocab_size", 1 << 30)), "vocab_size must be in 1…4194304, got 1073741824")
        XCTAssertEqual(message(with("ffn_widths", [16, 1 << 21])),
                       "layer 1 has 4 heads or an MLP of 2097152 (at most 1024 and 1048576)")
        XCTAssertEqual(message(with("eos_token_id", 10)), "eos_token_id 10 is outside the vocabulary (10)")
        XCTAssertEqual(message(with("max_position_embeddings", 1 << 30)),
                       "max_position_embeddings must be in 1…16777216, got 1073741824")
        XCTAssertEqual(message(with("ffn_widths", [-1, 16])),
                       "layer 0 has a negative size (heads 4, KV heads 2, MLP -1)")
        XCTAssertEqual(message(with("vocab_size", nil)),
                       "invalid model configuration: missing key 'vocab_size'")
        XCTAssertEqual(message(with("rope_scaling", ["rope_type": "yarn", "factor": 2])),
                       "rope_scaling of type 'yarn' is not supported (only llama3)")
    }
}
