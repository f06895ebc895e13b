import Calibration
import Foundation
import LlamaModel
import Pruning
import TensorIO
import TestSupport
import XCTest

/// Channel scores against a numpy implementation written from the official FLAP, Wanda-sp, CFSP
/// and FASP code (scripts/reference/score_reference.py), on statistics of the same windows.
final class ScoreTests: XCTestCase {
    /// Our statistics for the windows of a calibration fixture, written to a temporary file.
    func statistics(model: Model, fixture: String) throws -> (StatisticsFile, Int) {
        let ref = try TensorFile(path: Fixtures.url("calibrate/\(fixture)").path)
        let entry = ref.header.entry("windows")!
        let windows = CalibrationWindows(ids: try ref.integers("windows").map { Int32($0) }, count: entry.shape[0],
                                         length: entry.shape[1], mode: "tokens", dataSHA256: "fixture")
        let calibrator = try Calibrator(model: model, windows: windows)
        let path = try Fixtures.temporaryDirectory().appendingPathComponent("stats.st").path
        let writer = try StatisticsFile.writer(
            path: path, config: model.config, layout: calibrator.layout,
            metadata: calibrator.metadata(fingerprint: try model.fingerprint(), source: .tokens("t"), seed: 0))
        try calibrator.run(into: writer)
        try writer.finish()
        return (try StatisticsFile(path: path), windows.count)
    }

    func check(model: Model, stats fixture: String, scores: String, layers: [Int]) throws {
        let (stats, N) = try statistics(model: model, fixture: fixture)
        let ref = try TensorFile(path: Fixtures.url("score/\(scores)").path)
        var compared = 0
        // taylor and hywia read gradients, not activations: TaylorTests.
        for metric in ScoreMetric.allCases where ![.wifv, .taylor, .hywia].contains(metric) {
            for l in layers {
                let s = try Scoring.score(metric, layer: l, weights: try model.layer(l), stats: stats, windows: N)
                for (name, ours) in [(ScoreNames.attention(l), s.attention), (ScoreNames.mlp(l), s.mlp)] {
                    let key = "\(metric.rawValue)/\(name)"
                    guard ref.header.entry(key) != nil else {
                        XCTAssertTrue(ours == nil, "\(key): we score it, the reference does not")
                        continue
                    }
                    guard let ours else { XCTFail("\(key) missing"); continue }
                    let expected = try ref.doubles(key)
                    let scale = expected.map(abs).max() ?? 1
                    // The statistics are ours (float32 activations), the reference's from transformers.
                    assertAllClose(ours, expected, atol: 1e-4 * scale, rtol: 1e-3, key)
                    compared += 1
                }
            }
        }
        XCTAssertGreaterThan(compared, 10)
    }

    func testTinyScores() throws {
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        try check(model: model, stats: "tiny_uniform_stats.safetensors", scores: "tiny_scores.safetensors", layers: [0, 1])
    }

    func testSmolLM2Scores() throws {
        let model = try Model.open(try Fixtures.requireModel())
        try check(model: model, stats: "smollm2_stats.safetensors", scores: "smollm2_scores.safetensors",
                  layers: [0, 1, 15, 29])
    }
}
