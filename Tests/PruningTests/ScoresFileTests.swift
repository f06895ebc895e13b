import Foundation
import LlamaModel
import Pruning
import TensorIO
import TestSupport
import XCTest

/// The scores file refuses each corruption with one line that names it (never a silent default:
/// a bias list that does not decode used to become "no biases", and wrong parameter costs).
final class ScoresFileTests: XCTestCase {
    /// A copy of the tiny model's scores with its metadata changed and tensors replaced.
    func variant(_ change: (inout [String: String]) -> Void, replacing: [String: [Double]] = [:]) throws -> String {
        let source = try TensorFile(path: Fixtures.url("allocate/tiny_nonuniform_wanda_scores.safetensors").path)
        var meta = source.metadata
        change(&meta)
        var tensors: [(TensorEntry, [UInt8])] = []
        for e in source.header.entries {
            if let values = replacing[e.name] {
                tensors.append((TensorEntry(name: e.name, dtype: .F64, shape: [values.count]), values.withUnsafeBytes { Array($0) }))
            } else if e.dtype == .I64 {
                tensors.append((e, try source.integers(e.name).map { Int64($0) }.withUnsafeBytes { Array($0) }))
            } else {
                tensors.append((e, try source.doubles(e.name).withUnsafeBytes { Array($0) }))
            }
        }
        let path = try Fixtures.temporaryDirectory().appendingPathComponent("scores.st").path
        try writeTensorFile(path: path, tensors: tensors, metadata: meta)
        return path
    }

    func refusal(_ path: String) -> String {
        do {
            _ = try ScoresFile(path: path)
            return "accepted"
        } catch { return "\(error)" }
    }

    func testReadsTheFixtureWithItsBiases() throws {
        let file = try ScoresFile(path: try variant { _ in })
        XCTAssertEqual(file.config.numLayers, 3)
        XCTAssertEqual(file.biases.count, 3)
        XCTAssertEqual(file.shapes.map(\.H), [4, 0, 6])
    }

    func testEachCorruptionIsRefusedWithItsReason() throws {
        XCTAssertTrue(refusal(try variant { $0["format"] = "prunekit-plan" }).contains("not a scores file (metadata format is 'prunekit-plan')"))
        XCTAssertTrue(refusal(try variant { $0["config"] = nil }).contains("metadata config is missing"))
        XCTAssertTrue(refusal(try variant { $0["config"] = "{\"hidden_size\": 4}" }).contains("metadata config: invalid model configuration: missing key"))
        XCTAssertTrue(refusal(try variant { $0["biases"] = nil }).contains("metadata biases is missing"))
        for bad in ["[[\"q_proj\"]]", "[[\"w_proj\"],[],[]]", "not json", "[[1],[],[]]", "{}"] {
            XCTAssertTrue(refusal(try variant { $0["biases"] = bad }).contains("metadata biases must list, for each of the 3 layers"), bad)
        }
        XCTAssertTrue(refusal(try variant({ _ in }, replacing: [ScoreNames.mlp(1): [1, 2, 3]])).contains("layer 1 has 3 MLP scores, the configuration 24"))
        XCTAssertTrue(refusal(try variant({ _ in }, replacing: [ScoreNames.mlp(0): [Double](repeating: .nan, count: 40)])).contains("layer 0 has a MLP score nan"))
    }

    /// The bias list is written with the JSON writer and reads back as it was.
    func testBiasListRoundTrips() throws {
        let file = try ScoresFile(path: try variant { $0["biases"] = "[[\"q_proj\",\"down_proj\"],[],[\"v_proj\"]]" })
        XCTAssertEqual(file.biases, [[.q, .down], [], [.v]])
    }
}
