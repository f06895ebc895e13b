import Foundation
import LlamaModel
import TensorIO
import TestSupport
import Training
import XCTest

/// LoRA on the tiny model: gradients against the full backward and finite differences, and ten
/// optimizer steps against torch + peft (scripts/reference/lora_reference.py).
final class LoRATests: XCTestCase {
    let modelPath = Fixtures.url("model/tiny_uniform.safetensors").path

    /// The fixture's eight sequences, with transformers' labels (−100: ignored) turned into
    /// per-position targets.
    func fixtureExamples(_ ref: TensorFile) throws -> [TrainingExample] {
        let tokens = try ref.integers("tokens").map { Int32($0) }, labels = try ref.integers("labels")
        return (0..<8).map { i in
            let row = Array(tokens[(i * 12)..<((i + 1) * 12)])
            let targets = (0..<12).map { t -> Int32 in
                t + 1 < 12 && labels[i * 12 + t + 1] != -100 ? Int32(labels[i * 12 + t + 1]) : -1
            }
            return TrainingExample(tokens: row, targets: targets)
        }
    }

    func testTenStepsFollowTorchAndPEFT() throws {
        let ref = try TensorFile(path: Fixtures.url("finetune/lora_steps.safetensors").path)
        let model = try Model.open(modelPath)
        for name in ["all", "qv"] {
            let meta = ref.metadata
            var options = FinetuneOptions()
            options.rank = Int(meta["\(name).r"]!)!
            options.alpha = Double(meta["\(name).alpha"]!)!
            options.dropout = 0
            options.targets = meta["\(name).targets"]!.split(separator: ",").map { Projection(shortName: String($0))! }
            options.steps = 10
            options.batch = 4
            options.microBatch = 2
            options.learningRate = 0.01
            options.warmup = Int(meta["\(name).warmup"]!)!
            options.schedule = LearningRateSchedule(rawValue: meta["\(name).schedule"]!)!
            options.weightDecay = Double(meta["\(name).weight_decay"]!)!
            options.shuffle = false
            let adapters = LoRAAdapters(config: model.config, alpha: options.alpha, dropout: 0) { options.rank(layer: $0, $1) }
            for (tensor, shape, offset) in adapters.named {
                let initial = try ref.doubles("\(name).init.\(tensor)")
                XCTAssertEqual(initial.count, shape.reduce(1, *), tensor)
                for (i, x) in initial.enumerated() { adapters.parameters[offset + i] = Float(x) }
            }
            XCTAssertEqual(adapters.named.count * 2, ref.header.entries.filter { $0.name.hasPrefix("\(name).init.") }.count * 2)
            let runner = Runner(model: model, maxPositions: 12)
            let trainer = try LoRATrainer(runner: runner, adapters: adapters, options: options,
                                          examples: try fixtureExamples(ref))
            let losses = try ref.doubles("\(name).loss"), norms = try ref.doubles("\(name).grad_norm")
            let rates = try ref.doubles("\(name).lr")
            for k in 0..<10 {
                let record = try trainer.runStep()
                XCTAssertEqual(record.loss, losses[k], accuracy: 1e-4, "\(name) step \(k) loss")
                XCTAssertEqual(record.gradientNorm, norms[k], accuracy: 1e-4 * max(1, norms[k]), "\(name) step \(k) norm")
                XCTAssertEqual(record.learningRate, rates[k], accuracy: 1e-12, "\(name) step \(k) lr")
            }
            for (tensor, shape, offset) in adapters.named {
                let expected = try ref.doubles("\(name).final.\(tensor)")
                let got = (0..<shape.reduce(1, *)).map { adapters.parameters[offset + $0] }
                assertAllClose(got, expected, atol: 1e-4, rtol: 1e-3, "\(name) \(tensor)")
            }
        }
    }

    /// With W' = W + s·B·A, ∂L/∂B = s·G·Aᵀ and ∂L/∂A = s·Bᵀ·G where G = ∂L/∂W' is what the full
    /// backward computes on the merged model: the adapters' gradients, every layer and
    /// projection, from the weights' gradients (no dropout).
    func testAdapterGradientsEqualTheMergedModelsWeightGradients() throws {
        let model = try Model.open(modelPath)
        let adapters = LoRAAdapters(config: model.config, alpha: 6, dropout: 0) { l, p in 1 + (l + p.index) % 3 }
        adapters.initialize(seed: 7)
        var rng = SplitMix64(seed: 3)
        for a in adapters.adapters {
            for i in 0..<(a.outFeatures * a.rank) { adapters.parameters[a.bOffset + i] = (rng.nextUnitFloat() - 0.5) * 0.2 }
        }
        let ref = try TensorFile(path: Fixtures.url("finetune/lora_steps.safetensors").path)
        let examples = try fixtureExamples(ref)
        let windows = examples.prefix(3).map(\.tokens), targets = examples.prefix(3).map(\.targets)
        let loss = try Runner(model: model, maxPositions: 12).lossAndAdapterGradients(
            windows, targets: targets, adapters: adapters)

        // The merged model, in memory, and its weight gradients.
        let merged = try MergedModel(model: model, adapters: adapters)
        let runner = Runner(model: model, maxPositions: 12)
        try runner.keep(layers: merged.layers)
        let mergedLoss = try runner.loss(windows, targets: targets, adapters: nil)
        XCTAssertEqual(loss.mean, mergedLoss.mean, accuracy: 1e-5)
        var gradients = ModelGradients(zerosLike: model)
        // The merged model's full gradient of the same (targeted) loss.
        let full = try runner.lossAndGradients(windows, targets: targets, into: &gradients)
        XCTAssertEqual(full.mean, loss.mean, accuracy: 1e-5)
        for a in adapters.adapters {
            let G = gradients.layers[a.layer].linear(a.projection).weight.map(Double.init)  // [out, in]
            let A = (0..<(a.rank * a.inFeatures)).map { Double(adapters.parameters[a.aOffset + $0]) }
            let B = (0..<(a.outFeatures * a.rank)).map { Double(adapters.parameters[a.bOffset + $0]) }
            let s = Double(a.scale)
            var dB = [Double](repeating: 0, count: a.outFeatures * a.rank)
            var dA = [Double](repeating: 0, count: a.rank * a.inFeatures)
            for o in 0..<a.outFeatures {
                for j in 0..<a.rank {
                    for i in 0..<a.inFeatures { dB[o * a.rank + j] += s * G[o * a.inFeatures + i] * A[j * a.inFeatures + i] }
                }
            }
            for j in 0..<a.rank {
                for i in 0..<a.inFeatures {
                    for o in 0..<a.outFeatures { dA[j * a.inFeatures + i] += s * B[o * a.rank + j] * G[o * a.inFeatures + i] }
                }
            }
            let gotB = (0..<dB.count).map { adapters.gradients[a.bOffset + $0] }
            let gotA = (0..<dA.count).map { adapters.gradients[a.aOffset + $0] }
            let scale = max(dB.map(abs).max()!, dA.map(abs).max()!, 1e-6)
            assertAllClose(gotB, dB, atol: 1e-4 * scale, rtol: 1e-3, "layer \(a.layer) \(a.projection) dB")
            assertAllClose(gotA, dA, atol: 1e-4 * scale, rtol: 1e-3, "layer \(a.layer) \(a.projection) dA")
        }
    }

    /// With dropout the masks are drawn again in the backward (and in a recomputed forward): the
    /// gradient still matches central differences of the same masked loss, under both policies.
    func testDropoutGradientsMatchFiniteDifferences() throws {
        let model = try Model.open(modelPath)
        let ref = try TensorFile(path: Fixtures.url("finetune/lora_steps.safetensors").path)
        let examples = try fixtureExamples(ref)
        let windows = examples.prefix(2).map(\.tokens), targets = examples.prefix(2).map(\.targets)
        for policy in ActivationPolicy.allCases {
            let adapters = LoRAAdapters(config: model.config, alpha: 4, dropout: 0.3) { _, _ in 2 }
            adapters.initialize(seed: 1)
            var rng = SplitMix64(seed: 5)
            for a in adapters.adapters {
                for i in 0..<(a.outFeatures * a.rank) { adapters.parameters[a.bOffset + i] = (rng.nextUnitFloat() - 0.5) * 0.5 }
            }
            adapters.dropoutKey = 99
            let runner = Runner(model: model, maxPositions: 12)
            adapters.zeroGradients()
            _ = try runner.lossAndAdapterGradients(windows, targets: targets, adapters: adapters, policy: policy)
            let analytic = (0..<adapters.count).map { adapters.gradients[$0] }
            func lossAt() throws -> Double {
                try runner.lossAndAdapterGradients(windows, targets: targets, adapters: adapters, policy: policy).mean
            }
            // A spread of parameters: A and B entries of the first, a middle and the last adapter.
            let picks = [adapters.adapters.first!, adapters.adapters[adapters.adapters.count / 2], adapters.adapters.last!]
                .flatMap { [$0.aOffset, $0.aOffset + 5, $0.bOffset, $0.bOffset + $0.outFeatures * $0.rank - 1] }
            let h: Float = 1e-2
            for i in picks {
                let saved = adapters.parameters[i]
                adapters.parameters[i] = saved + h
                let up = try lossAt()
                adapters.parameters[i] = saved - h
                let down = try lossAt()
                adapters.parameters[i] = saved
                let numeric = (up - down) / (2 * Double(h))
                XCTAssertEqual(Double(analytic[i]), numeric, accuracy: 2e-3 * max(1, abs(numeric)) + 1e-4,
                               "parameter \(i) \(policy)")
            }
        }
    }
}
