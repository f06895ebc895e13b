import Calibration
import Foundation
import LlamaModel
import TensorIO
import TestSupport
import XCTest

/// `calibrate --gradients`: the sums against torch autograd in float64 (taylor_reference.py's
/// `exact.*`), first order in batches and second order per window; shards merge to one run.
final class GradientStatisticsTests: XCTestCase {
    func windows(_ path: String) throws -> CalibrationWindows {
        let tokens = try TensorFile(path: path).integers("tokens").map { Int32($0) }
        return CalibrationWindows(ids: tokens, count: 3, length: 12, mode: "tokens", dataSHA256: "test")
    }

    func testGradientSumsEqualTorch() throws {
        for (name, modelPath) in [("tiny_uniform", "model/tiny_uniform.safetensors"), ("tiny_mha", "taylor/tiny_mha.safetensors")] {
            let model = try Model.open(Fixtures.url(modelPath).path)
            let refPath = Fixtures.url("taylor/\(name)_taylor.safetensors").path
            let ref = try TensorFile(path: refPath)
            for (second, batchRows) in [(true, 4096), (false, 24), (false, 4096)] {
                let calibrator = try Calibrator(model: model, windows: try windows(refPath),
                                                gradients: GradientLayout(second: second, dtype: .F32), batchRows: batchRows)
                let sums = try calibrator.gradientSums(second: second)
                XCTAssertEqual(sums.loss.count, 33)
                for l in 0..<model.config.numLayers {
                    for p in Projection.allCases {
                        for squared in second ? [false, true] : [false] {
                            let tensor = StatNames.gradient(l, p, squared: squared)
                            let expected = try ref.doubles("exact." + tensor)
                            let mine = (squared ? sums.layer(l).second! : sums.layer(l).first).linear(p).weight
                            let scale = expected.map(abs).max() ?? 0
                            assertAllClose(mine, expected, atol: 1e-5 * scale, rtol: 1e-4, "\(name) \(tensor) batch rows \(batchRows)")
                        }
                    }
                }
            }
        }
    }

    /// Sums too large for memory go to a temporary file (here: a limit of 0 bytes): the same values.
    func testSumsOnDiskEqualSumsInMemory() throws {
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let refPath = Fixtures.url("taylor/tiny_uniform_taylor.safetensors").path
        for second in [true, false] {
            let calibrator = try Calibrator(model: model, windows: try windows(refPath),
                                            gradients: GradientLayout(second: second, dtype: .F32), batchRows: 24)
            let memory = try calibrator.gradientSums(second: second)
            let disk = try calibrator.gradientSums(second: second, memoryLimit: 0)
            XCTAssertFalse(memory.onDisk)
            XCTAssertTrue(disk.onDisk)
            XCTAssertEqual(disk.loss, memory.loss)
            for l in 0..<model.config.numLayers {
                let (a, b) = (memory.layer(l), disk.layer(l))
                for p in Projection.allCases {
                    XCTAssertEqual(a.first.linear(p).weight, b.first.linear(p).weight, "layer \(l) \(p)")
                    XCTAssertEqual(a.second?.linear(p).weight, b.second?.linear(p).weight, "layer \(l) \(p) squared")
                }
            }
        }
    }

    func run(_ model: Model, _ windows: CalibrationWindows, shard: (Int, Int)?, to path: String) throws {
        let calibrator = try Calibrator(model: model, windows: windows, shard: shard,
                                        gradients: GradientLayout(second: true, dtype: .F32), batchRows: 12)
        let writer = try TensorFileWriter(
            path: path, entries: calibrator.layout.entries(model.config),
            metadata: calibrator.metadata(fingerprint: try model.fingerprint(), source: .tokens("t"), seed: 0))
        try calibrator.run(into: writer, gradients: try calibrator.gradientSums(second: true))
        try writer.finish()
    }

    func testShardsMergeToOneRun() throws {
        let model = try Model.open(Fixtures.url("taylor/tiny_mha.safetensors").path)
        let w = try windows(Fixtures.url("taylor/tiny_mha_taylor.safetensors").path)
        let dir = try Fixtures.temporaryDirectory()
        let whole = dir.appendingPathComponent("whole.st").path
        let shards = [0, 1].map { dir.appendingPathComponent("shard\($0).st").path }
        try run(model, w, shard: nil, to: whole)
        for (i, path) in shards.enumerated() { try run(model, w, shard: (i, 2), to: path) }
        let merged = dir.appendingPathComponent("merged.st").path
        try StatisticsMerge.merge(shards, output: merged, metadata: [:])
        let a = try TensorFile(path: whole), b = try TensorFile(path: merged)
        XCTAssertEqual(a.header.entries.map(\.name), b.header.entries.map(\.name))
        XCTAssertEqual(b.metadata["gradients"], "second")
        XCTAssertEqual(try a.integers(StatNames.lossCount), [33])
        for e in a.header.entries where !e.dtype.isInteger {
            // Window by window the same arithmetic; the whole run adds them in float32, the merge
            // the shards' float32 sums in float64: one rounding apart, at the scale of the terms.
            let expected = try a.doubles(e.name)
            let scale = expected.map(abs).max() ?? 0
            assertAllClose(try b.doubles(e.name), expected, atol: 1e-6 * scale, rtol: 1e-6, e.name)
        }
    }
}
