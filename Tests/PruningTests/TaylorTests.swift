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

/// HyWIA's fusion (docs/DESIGN.md "HyWIA") on the reference's element-wise and vector-wise Taylor
/// values: each granularity divided by its layer mean (or its maximum, or ranked), then fine, coarse,
/// their mean, or the per-channel softmax mix; a large temperature tends to the mean, a small one to
/// the larger.
final class HyWIATests: XCTestCase {
    func testFusionOfTheReferenceGranularities() throws {
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let stats = try StatisticsFile(path: Fixtures.url("taylor/tiny_uniform_taylor.safetensors").path)
        let ref = try TensorFile(path: stats.path)
        func normalised(_ x: [Double]) -> [Double] { let m = x.reduce(0, +) / Double(x.count); return x.map { $0 / m } }
        func byMax(_ x: [Double]) -> [Double] { let m = x.max()!; return x.map { $0 / m } }
        // The fraction of the other values below, ties counted half (the mean rank, scaled to [0, 1]).
        func ranks(_ x: [Double]) -> [Double] {
            x.map { v in (Double(x.filter { $0 < v }.count) + Double(x.filter { $0 == v }.count - 1) / 2) / Double(x.count - 1) }
        }
        for l in 0..<model.config.numLayers {
            for kind in ["attention", "mlp"] {
                let fine = try ref.doubles("score.mix.element.mean.\(l).\(kind)")
                let coarse = try ref.doubles("score.mix.vector.mean.\(l).\(kind)")
                let f = normalised(fine), g = normalised(coarse)
                let expected: [(HyWIAOptions, [Double])] = [
                    (HyWIAOptions(fusion: .fine, normalisation: .mean), f), (HyWIAOptions(fusion: .coarse, normalisation: .mean), g),
                    (HyWIAOptions(fusion: .equal, normalisation: .mean), zip(f, g).map { ($0 + $1) / 2 }),
                    (HyWIAOptions(fusion: .adaptive, temperature: 0.5, normalisation: .mean), zip(f, g).map { a, b in
                        let wa = exp(a / 0.5), wb = exp(b / 0.5)
                        return (wa * a + wb * b) / (wa + wb)
                    }),
                    (HyWIAOptions(fusion: .adaptive, temperature: 1e9, normalisation: .mean), zip(f, g).map { ($0 + $1) / 2 }),
                    (HyWIAOptions(fusion: .adaptive, temperature: 1e-6, normalisation: .mean), zip(f, g).map { max($0, $1) }),
                    (HyWIAOptions(fusion: .equal, normalisation: .max), zip(byMax(fine), byMax(coarse)).map { ($0 + $1) / 2 }),
                    (HyWIAOptions(fusion: .fine, normalisation: .rank), ranks(fine)),
                    (HyWIAOptions(), zip(ranks(fine), ranks(coarse)).map { a, b in
                        (exp(a) * a + exp(b) * b) / (exp(a) + exp(b))
                    }),
                ]
                for (options, want) in expected {
                    let s = try Scoring.score(.hywia, layer: l, weights: try model.layer(l), stats: stats, windows: 3,
                                              config: model.config,
                                              taylor: TaylorOptions(order: .mix, reduce: .mean), hywia: options)
                    assertAllClose(kind == "mlp" ? s.mlp : s.attention!, want, atol: 1e-12, rtol: 1e-6,
                                   "layer \(l) \(kind) \(options.description)")
                }
            }
        }
    }
}
