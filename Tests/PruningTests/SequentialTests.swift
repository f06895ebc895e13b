import Calibration
import Foundation
import LlamaModel
import Pruning
import TensorIO
import TestSupport
import XCTest

/// Sequential pruning (`calibrate --sequential`) against the official Wanda-sp loop
/// (scripts/reference/sequential_reference.py, Tests/Fixtures/sequential), and its contract with
/// the stages that run after it.
final class SequentialTests: XCTestCase {
    let modelPath = Fixtures.url("model/tiny_uniform.safetensors").path
    let windowsPath = Fixtures.url("sequential/windows.safetensors").path

    struct Reference: Decodable {
        struct Args: Decodable {
            var metric: String, ratio: Double, prune: String, restore: String?, damp: Double?
        }
        struct Layer: Decodable {
            var kept_heads: [Int], kept_kv_heads: [Int], kept_channels: [Int]
        }
        var args: Args
        var layers: [Layer]
    }

    func references() throws -> [String: Reference] {
        try JSONDecoder().decode([String: Reference].self, from: Data(contentsOf: Fixtures.url("sequential/reference.json")))
    }

    func options(_ a: Reference.Args, layers: Int) throws -> AllocationOptions {
        try AllocationOptions(ratio: a.ratio, structure: "UL-UM", blocks: nil, angularA: 1, attentionUnit: "group",
                              prune: a.prune, layers: nil, round: nil, minKeep: 1, removeHeads: 0,
                              hasAttentionScores: true, layerCount: layers)
    }

    func recipe(_ a: Reference.Args, layers: Int) throws -> SequentialRecipe {
        try SequentialRecipe(metric: ScoreMetric(rawValue: a.metric)!, allocation: options(a, layers: layers),
                             restore: a.restore.map { RestoreMethod(rawValue: $0)! }, damp: a.damp ?? 0.01)
    }

    /// calibrate --sequential on the fixture's windows, Gram matrices (float64) at o_proj and down_proj.
    @discardableResult
    func calibrate(_ model: Model, _ recipe: SequentialRecipe, to output: String, cache: String? = nil) throws -> SequentialPruner {
        var request = CalibrationRequest(source: .tokens(windowsPath))
        request.gramPoints = [.oProjInput, .downProjInput]
        request.gramDType = .F64
        request.cache = cache
        let pruner = SequentialPruner(model: model, recipe: recipe)
        request.pruner = pruner
        _ = try Calibrator.run(request, model: model, output: output, metadata: [:])
        return pruner
    }

    /// The pruner's decisions equal the official loop's kept heads, KV heads and channels layer by
    /// layer; score → allocate → slice → restore run afterwards on the statistics make the same plan,
    /// and the model they write gives the reference's logits.
    func testPlansAndLogitsEqualTheOfficialLoop() throws {
        let model = try Model.open(modelPath)
        let dir = try Fixtures.temporaryDirectory()
        let tokens = try TensorFile(path: Fixtures.url("model/tiny_uniform_ref.safetensors").path).integers("tokens").map(Int32.init)
        let logits = try TensorFile(path: Fixtures.url("sequential/logits.safetensors").path)
        for (name, ref) in try references().sorted(by: { $0.key < $1.key }) {
            let L = model.config.numLayers
            let stats = dir.appendingPathComponent("\(name)-stats.st").path
            let pruner = try calibrate(model, try recipe(ref.args, layers: L), to: stats)
            for l in 0..<L {
                let p = try XCTUnwrap(pruner.plans[l], "\(name) layer \(l)")
                // Known before the layer ran, and so whether its pruned pass reused the attention half.
                XCTAssertEqual(try pruner.keepsAttentionWhole(layer: l),
                               p.keptHeads.count == model.config.headCounts[l] && p.keptKVHeads.count == model.config.kvHeadCounts[l],
                               "\(name) layer \(l)")
                XCTAssertEqual(p.keptHeads, ref.layers[l].kept_heads, "\(name) layer \(l) heads")
                XCTAssertEqual(p.keptKVHeads, ref.layers[l].kept_kv_heads, "\(name) layer \(l) KV heads")
                XCTAssertEqual(p.keptChannels, ref.layers[l].kept_channels, "\(name) layer \(l) channels")
            }

            let statsFile = try StatisticsFile(path: stats)
            XCTAssertEqual(statsFile.metadata["sequential"], pruner.settings)
            let scores = dir.appendingPathComponent("\(name)-scores.st").path
            try ScoresFile.write(path: scores, model: model, stats: statsFile, metric: .wandaSP, metadata: [:], progress: { _ in })
            let (plan, planFile) = try Allocation.plan(try ScoresFile(path: scores), options: options(ref.args, layers: L))
            XCTAssertEqual(plan.layers, pruner.plans.map { $0! }, name)
            let planPath = dir.appendingPathComponent("\(name)-plan.st").path
            try planFile.write(to: planPath)
            var pruned = dir.appendingPathComponent("\(name)-sliced.st").path
            try Slicing.write(model, plan: try PlanFile(path: planPath), to: pruned, metadata: [:])
            if let method = ref.args.restore.map({ RestoreMethod(rawValue: $0)! }) {
                let restored = dir.appendingPathComponent("\(name)-restored.st").path
                try Restoration.restoreModel(sliced: try Model.open(pruned), dense: model, stats: statsFile,
                                             plan: try PlanFile(path: planPath), method: method, damp: ref.args.damp!,
                                             output: restored, metadata: [:])
                pruned = restored
            }
            let runner = Runner(model: try Model.open(pruned), maxPositions: 19)
            let V = model.config.vocabSize
            let expected = try logits.doubles(name)
            for s in 0..<2 {
                let got = try runner.logits(Array(tokens[s * 19..<(s + 1) * 19]))
                assertAllClose(got, Array(expected[s * 19 * V..<(s + 1) * 19 * V]), atol: 2e-4, rtol: 1e-3, "\(name) sequence \(s)")
            }
        }
    }

    /// Statistics measured under one recipe cannot feed a stage asked for another.
    func testStagesRefuseAnotherRecipe() throws {
        let model = try Model.open(modelPath)
        let dir = try Fixtures.temporaryDirectory()
        let ref = try XCTUnwrap(try references()["lsq"])
        let L = model.config.numLayers
        let stats = dir.appendingPathComponent("stats.st").path
        try calibrate(model, try recipe(ref.args, layers: L), to: stats)
        let statsFile = try StatisticsFile(path: stats)
        let scores = dir.appendingPathComponent("scores.st").path
        XCTAssertThrowsError(try ScoresFile.write(path: scores, model: model, stats: statsFile, metric: .flap, metadata: [:],
                                                  progress: { _ in })) { XCTAssertTrue("\($0)".contains("metric wanda-sp (score asks flap)"), "\($0)") }
        try ScoresFile.write(path: scores, model: model, stats: statsFile, metric: .wandaSP, metadata: [:], progress: { _ in })
        var other = ref.args
        other.ratio = 0.3
        XCTAssertThrowsError(try Allocation.plan(try ScoresFile(path: scores), options: options(other, layers: L))) {
            XCTAssertTrue("\($0)".contains("ratio 0.5 (allocate asks 0.3)"), "\($0)")
        }
        let (_, planFile) = try Allocation.plan(try ScoresFile(path: scores), options: options(ref.args, layers: L))
        let planPath = dir.appendingPathComponent("plan.st").path
        try planFile.write(to: planPath)
        let sliced = dir.appendingPathComponent("sliced.st").path
        try Slicing.write(model, plan: try PlanFile(path: planPath), to: sliced, metadata: [:])
        let restored = dir.appendingPathComponent("restored.st").path
        XCTAssertThrowsError(try Restoration.restoreModel(sliced: try Model.open(sliced), dense: model, stats: statsFile,
                                                          plan: try PlanFile(path: planPath), method: .bias, damp: 0.01,
                                                          output: restored, metadata: [:])) {
            XCTAssertTrue("\($0)".contains("restore lsq (restore asks bias)"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: restored))
        XCTAssertThrowsError(try SequentialRecipe(metric: .wandaSP, allocation: AllocationOptions(ratio: 0.2, structure: .alam),
                                                  restore: nil, damp: 0.01)) { XCTAssertTrue("\($0)".contains("UL-UM or UL-MM"), "\($0)") }
    }

    /// With a cache, a rerun resumes from the layers done (all of them, or after the last one whose
    /// statistics survive) and writes the same bytes; a cache of another recipe is refused.
    func testCacheResumesAndRefusesAnotherRecipe() throws {
        let model = try Model.open(modelPath)
        let dir = try Fixtures.temporaryDirectory()
        let ref = try XCTUnwrap(try references()["lsq"])
        let L = model.config.numLayers
        let cache = dir.appendingPathComponent("cache").path
        let first = dir.appendingPathComponent("first.st").path
        try calibrate(model, try recipe(ref.args, layers: L), to: first, cache: cache)
        let expected = try Data(contentsOf: URL(fileURLWithPath: first))
        let again = dir.appendingPathComponent("again.st").path
        let replayed = try calibrate(model, try recipe(ref.args, layers: L), to: again, cache: cache)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: again)), expected, "every layer from the cache")
        XCTAssertEqual(replayed.plans.compactMap { $0 }.count, L, "the pruner replays the cached layers")
        try FileManager.default.removeItem(atPath: cache + "/layer-1.stats.st")  // interrupted before layer 1 was done
        let resumed = dir.appendingPathComponent("resumed.st").path
        try calibrate(model, try recipe(ref.args, layers: L), to: resumed, cache: cache)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: resumed)), expected, "resumed at layer 1")

        var other = ref.args
        other.ratio = 0.3
        let refused = dir.appendingPathComponent("refused.st").path
        XCTAssertThrowsError(try calibrate(model, try recipe(other, layers: L), to: refused, cache: cache)) {
            XCTAssertTrue("\($0)".contains("another pruning recipe"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: refused))
    }
}
