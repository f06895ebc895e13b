import Calibration
import Foundation
import LlamaModel
import Pruning
import TensorIO
import TestSupport
import XCTest

/// LLM-Pruner's Taylor importance against an independent numpy implementation of its
/// TaylorImportance (scripts/reference/taylor_reference.py) on the same stored gradient sums, every
/// order × granularity × reduction, for a grouped-query model (k/v rows excluded) and a multi-head
/// one (k/v rows coupled to their head, as LLM-Pruner's dependency graph couples them).
final class TaylorTests: XCTestCase {
    static let cases = [("tiny_uniform", "model/tiny_uniform.safetensors"), ("tiny_mha", "taylor/tiny_mha.safetensors")]

    func testScoresEqualTheReference() throws {
        for (name, modelPath) in Self.cases {
            let model = try Model.open(Fixtures.url(modelPath).path)
            let stats = try StatisticsFile(path: Fixtures.url("taylor/\(name)_taylor.safetensors").path)
            let ref = try TensorFile(path: stats.path)
            XCTAssertEqual(try stats.gradientOrder(), "second")
            for order in TaylorOptions.Order.allCases {
                for granularity in TaylorOptions.Granularity.allCases {
                    for reduce in TaylorOptions.Reduction.allCases {
                        let options = TaylorOptions(order: order, granularity: granularity, reduce: reduce)
                        for l in 0..<model.config.numLayers {
                            let s = try Scoring.score(.taylor, layer: l, weights: try model.layer(l), stats: stats, windows: 3,
                                                      config: model.config, taylor: options)
                            let key = "score.\(order.rawValue).\(granularity.rawValue).\(reduce.rawValue).\(l)"
                            assertAllClose(s.attention ?? [], try ref.doubles(key + ".attention"), atol: 1e-15, rtol: 1e-6,
                                           "\(name) \(key) attention")
                            assertAllClose(s.mlp, try ref.doubles(key + ".mlp"), atol: 1e-15, rtol: 1e-6, "\(name) \(key) mlp")
                        }
                    }
                }
            }
        }
    }
}
