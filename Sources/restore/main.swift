import ArgumentParser
import Calibration
import Foundation
import LlamaModel
import Pruning
import TensorIO
import ToolSupport

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Compensate o_proj and down_proj for the heads and channels slicing removed.",
        discussion: """
            bias (FLAP): b' = b + W[:, dropped]·mean(x[dropped]) on o_proj and down_proj.
            lsq (FASP): the kept columns refitted, W' = W·G[:, K]·(G[K, K] + λI)⁻¹, G = XᵀX of the \
            consumer's input from the statistics (calibrate --gram o_proj,down_proj), λ = --damp × mean \
            diagonal, solved by Cholesky (LAPACK).
            bias+lsq: both, by the least-squares fit with a constant input appended.
            The reconstruction error ‖WX + b − W'X_K − b'‖² over the calibration tokens is printed per \
            layer when the statistics hold Gram matrices; a layer whose fit would be worse keeps the plain slice.

            Example:
              restore --model sliced.st.zst --dense smollm2.st.zst --stats stats.st.zst --plan plan.st.zst --method bias -o pruned.st.zst
            """)

    @Option(name: .long, help: "The sliced model (slice).")
    var model: String

    @Option(name: .long, help: "The dense model it was sliced from.")
    var dense: String

    @Option(name: .long, help: "Calibration statistics of the dense model.")
    var stats: String

    @Option(name: .long, help: "The plan the model was sliced with.")
    var plan: String

    @Option(name: .long, help: "bias, lsq or bias+lsq.")
    var method: String

    @Option(name: .long, help: "Ridge damping for lsq: λ = damp × mean diagonal of G[K, K].")
    var damp: Double = 0.01

    @Option(name: [.short, .long], help: "Output model file (.st.zst compressed), or - for standard output.")
    var output: String

    @OptionGroup var common: CommonOptions

    func run() throws {
        try runToolBody("restore") {
            installInterruptCleanup()
            try checkBinaryOutput(output)
            guard let method = RestoreMethod(rawValue: method) else {
                throw UsageError("--method must be bias, lsq or bias+lsq, got '\(self.method)'")
            }
            guard damp >= 0 else { throw UsageError("--damp must not be negative") }
            let sliced = try Model.open(model)
            let denseModel = try Model.open(dense)
            let planFile = try PlanFile(path: plan)
            let statsFile = try TensorFile(path: stats)
            let parent = try denseModel.fingerprint()
            guard sliced.sourceMetadata["parent_fingerprint"] == parent else {
                throw SliceError("\(model): not sliced from \(dense) (its parent fingerprint differs)")
            }
            guard sliced.sourceMetadata["plan_digest"] == planFile.digest else {
                throw SliceError("\(model): not sliced with \(plan)")
            }
            guard statsFile.metadata["format"] == StatNames.format, statsFile.metadata["shards"] == nil else {
                throw SliceError("\(stats): not a complete statistics file")
            }
            guard statsFile.metadata["fingerprint"] == parent else {
                throw SliceError("\(stats): statistics of another model")
            }
            let c = denseModel.config, sc = sliced.config
            try planFile.check(against: c, name: plan)
            // Output tensors: the sliced model's, with o_proj and down_proj biases where the method adds them.
            var tensors: [(name: String, shape: [Int])] = []
            for name in sliced.tensorNames {
                tensors.append((name, sliced.shape(name)!))
                if method != .lsq, let l = layerIndex(name) {
                    for p in [Projection.o, .down] where name == TensorNames.weight(l, p) && !sliced.hasBias(l, p) {
                        tensors.append((TensorNames.bias(l, p), [c.hiddenSize]))
                    }
                }
            }
            var meta = standardMetadata(tool: "restore")
            let parentOfThis = try sliced.fingerprint()
            meta["fingerprint"] = Fingerprint.derived(from: parentOfThis, stage: "restore",
                                                      inputs: [method.rawValue, "\(damp)", statsFile.metadata["windows_sha256"] ?? ""])
            meta["parent_fingerprint"] = parent
            meta["plan_digest"] = planFile.digest
            meta["restore"] = method.rawValue
            let writer = try ModelWriter(path: output, config: sc, tensors: tensors,
                                         dtype: { sliced.shape($0) != nil ? sliced.storageType($0) : .F32 },
                                         tokenizerJSON: sliced.tokenizerJSON, metadata: meta)
            var rows: [String] = []
            try writer.complete {
                try writer.write(TensorNames.embedding, try sliced.embedding())
                for l in 0..<c.numLayers {
                    let d = try denseModel.layer(l)
                    var restored: [Projection: RestoreResult] = [:]
                    for (p, point, dense, kept) in [
                        (Projection.o, StatPoint.oProjInput, d.o, Slicing.keptAttentionColumns(planFile.layers[l], config: c, layer: l)),
                        (Projection.down, StatPoint.downProjInput, d.down, planFile.layers[l].keptChannels),
                    ] {
                        let n = Double(try statsFile.integers(StatNames.point(l, point, .count))[0])
                        let s = try statsFile.doubles(StatNames.point(l, point, .sum))
                        let g = statsFile.header.entry(StatNames.point(l, point, .gram)) != nil
                            ? try statsFile.doubles(StatNames.point(l, point, .gram)) : nil
                        if method.needsGram && g == nil && kept.count < dense.inFeatures {
                            throw SliceError("\(stats): no Gram matrix at layer \(l)'s \(point.shortName) input, which lost columns; calibrate with --gram \(point.shortName)")
                        }
                        guard s.count == dense.inFeatures else {
                            throw SliceError("\(stats): layer \(l) \(point.shortName) statistics have \(s.count) channels, the dense model \(dense.inFeatures)")
                        }
                        restored[p] = Restoration.restore(weight: dense.weight, out: dense.outFeatures, inF: dense.inFeatures, kept: kept,
                                                          bias: dense.bias, count: n, sum: s, gram: g, method: method, damp: damp)
                    }
                    for name in sliced.layerTensorNames(l) {
                        var values = try sliced.floats(name)
                        for p in [Projection.o, .down] {
                            let r = restored[p]!
                            if name == TensorNames.weight(l, p) { values = r.weight }
                            if name == TensorNames.bias(l, p), let b = r.bias { values = b }
                        }
                        try writer.write(name, values)
                        for p in [Projection.o, .down] where method != .lsq && name == TensorNames.weight(l, p) && !sliced.hasBias(l, p) {
                            try writer.write(TensorNames.bias(l, p), restored[p]!.bias ?? [Float](repeating: 0, count: c.hiddenSize))
                        }
                    }
                    func fmt(_ r: RestoreResult) -> String {
                        guard let b = r.errorBefore, let a = r.errorAfter else { return "      —" }
                        return String(format: "%10.4g → %10.4g%@", b, a, r.fellBack ? " (kept the plain slice)" : "")
                    }
                    rows.append(String(format: "%5d  o_proj %@   down_proj %@", l, fmt(restored[.o]!), fmt(restored[.down]!)))
                }
                try writer.write(TensorNames.finalNorm, try sliced.finalNorm())
                if let head = try sliced.head() { try writer.write(TensorNames.head, head) }
            }
            if !common.quiet {
                printError("layer  reconstruction error ‖WX + b − W'X_K − b'‖² over the calibration tokens: before → after")
                rows.forEach(printError)
            }
        }
    }

    func layerIndex(_ name: String) -> Int? {
        let parts = name.split(separator: ".")
        return parts.count > 2 && parts[0] == "model" && parts[1] == "layers" ? Int(parts[2]) : nil
    }
}

Restore.main()
