import ArgumentParser
import Calibration
import Foundation
import LlamaModel
import Pruning
import TensorIO
import ToolSupport

struct Allocate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allocate",
        abstract: "Decide which heads, KV groups and MLP channels every layer keeps, for a ratio of parameters removed.",
        discussion: """
            --ratio P is the fraction of decoder-layer linear parameters (q, k, v, o, gate, up, down \
            weights and biases) to remove; embeddings and the head are not counted. Structures as FLAP \
            defines them: UL-UM (uniform per layer and module; Wanda-sp, FASP), UL-MM, AL-MM, AL-AM \
            (adaptive across layers, standardised scores, cost-weighted global threshold); or --blocks \
            angular for CFSP's budget per block. docs/DESIGN.md ("The plan") states every rule.

            Example:
              allocate --scores scores.st.zst --ratio 0.2 --structure AL-AM -o plan.st.zst
            """)

    @Option(name: .long, help: "Scores (score).")
    var scores: String

    @Option(name: .long, help: "Fraction of decoder-layer linear parameters to remove, in [0, 1).")
    var ratio: Double

    @Option(name: .long, help: "UL-UM (also: uniform), UL-MM, AL-MM or AL-AM.")
    var structure: String?

    @Option(name: .long, help: "Per-block budgets: angular (CFSP; MLP only).")
    var blocks: String?

    @Option(name: .long, help: "CFSP's sigmoid slope a for --blocks angular.")
    var angularA: Double = 1

    @Option(name: .long, help: "Attention unit: group (a KV head with its query heads), head (one query head from every group at a time) or vo (FASP: one value dimension, a v_proj row with the o_proj columns that read it).")
    var attentionUnit: String = "group"

    @Option(name: .long, help: "Unit kinds to prune: attention, mlp or attention,mlp.")
    var prune: String?

    @Option(name: .long, help: "Prune only layers A-B (inclusive, from 0).")
    var layers: String?

    @Option(name: .long, help: "Keep a multiple of K MLP channels per layer.")
    var round: Int?

    @Option(name: .long, help: "Every pruned layer keeps at least this many attention units and MLP channels.")
    var minKeep: Int = 1

    @Option(name: .long, help: "Attention units to remove for UL-MM and AL-MM (FLAP's remove_heads).")
    var removeHeads: Int = 0

    @Option(name: .long, help: "Also draw the plan as an SVG bar chart.")
    var plot: String?

    @Option(name: [.short, .long], help: "Output plan file, or - for standard output.")
    var output: String

    @Flag(name: .long, help: "No table on standard error.")
    var quiet = false

    func validate() throws {
        guard ratio >= 0, ratio < 1 else { throw ValidationError("--ratio must be in [0, 1)") }
        guard (structure == nil) != (blocks == nil) else {
            throw ValidationError("give exactly one of --structure and --blocks")
        }
        if let round, round < 1 { throw ValidationError("--round must be at least 1") }
        if minKeep < 0 || removeHeads < 0 { throw ValidationError("--min-keep and --remove-heads must not be negative") }
    }

    func run() throws {
        try runToolBody("allocate") {
            installInterruptCleanup()
            try checkBinaryOutput(output)
            let file = try TensorFile(path: scores)
            let meta = file.metadata
            guard meta["format"] == ScoreNames.format else {
                throw CalibrationError("\(scores): not a scores file (metadata format is \(meta["format"].map { "'\($0)'" } ?? "missing"))")
            }
            guard let configText = meta["config"], let config = try? LlamaConfig.fromJSON(configText) else {
                throw CalibrationError("\(scores): metadata config is missing or invalid")
            }
            var options = AllocationOptions(ratio: ratio, structure: nil)
            if let structure {
                guard let s = Structure(rawValue: structure == "uniform" ? "UL-UM" : structure.uppercased()) else {
                    throw UsageError("--structure must be UL-UM, UL-MM, AL-MM, AL-AM or uniform, got '\(structure)'")
                }
                options.structure = s
            }
            if let blocks {
                guard blocks == "angular" else { throw UsageError("--blocks must be angular, got '\(blocks)'") }
                options.angularBlocks = true
            }
            options.angularA = angularA
            guard let unit = AttentionUnit(rawValue: attentionUnit) else {
                throw UsageError("--attention-unit must be group, head or vo, got '\(attentionUnit)'")
            }
            options.attentionUnit = unit
            let hasAttention = file.header.entry(ScoreNames.attention(0)) != nil
            let kinds = Set((prune ?? (hasAttention && blocks == nil ? "attention,mlp" : "mlp")).split(separator: ",").map(String.init))
            guard !kinds.isEmpty, kinds.isSubset(of: ["attention", "mlp"]) else {
                throw UsageError("--prune takes attention, mlp or attention,mlp")
            }
            options.pruneAttention = kinds.contains("attention")
            options.pruneMLP = kinds.contains("mlp")
            if let layers {
                let parts = layers.split(separator: "-").compactMap { Int($0) }
                guard parts.count == 2, parts[0] >= 0, parts[0] <= parts[1], parts[1] < config.numLayers else {
                    throw UsageError("--layers must be A-B with 0 ≤ A ≤ B < \(config.numLayers), got '\(layers)'")
                }
                options.layers = parts[0]...parts[1]
            }
            options.round = round
            options.minKeep = minKeep
            options.removeHeads = removeHeads

            let biasLists = (try? JSONSerialization.jsonObject(with: Data((meta["biases"] ?? "[]").utf8))) as? [[String]] ?? []
            var shapes: [LayerShape] = [], attention: [[Double]?] = [], mlp: [[Double]] = [], angular: [Double] = []
            for l in 0..<config.numLayers {
                let names = l < biasLists.count ? biasLists[l] : []
                let biases = Set(Projection.allCases.filter { names.contains(String($0.rawValue.split(separator: ".").last!)) })
                let shape = LayerShape(config: config, layer: l, biases: biases)
                shapes.append(shape)
                if hasAttention {
                    let a = try file.doubles(ScoreNames.attention(l))
                    guard a.count == config.attentionOutputWidth(layer: l) else {
                        throw CalibrationError("\(scores): layer \(l) has \(a.count) attention scores, the configuration \(config.attentionOutputWidth(layer: l))")
                    }
                    attention.append(a)
                } else {
                    attention.append(nil)
                }
                let m = try file.doubles(ScoreNames.mlp(l))
                guard m.count == shape.F else {
                    throw CalibrationError("\(scores): layer \(l) has \(m.count) MLP scores, the configuration \(shape.F)")
                }
                mlp.append(m)
                angular.append(try file.doubles(StatNames.block(l, .angularSum)).first ?? 0)
            }
            if let bad = (attention.compactMap { $0 } + mlp).joined().first(where: { !$0.isFinite }) {
                throw CalibrationError("\(scores): a score is \(bad)")
            }
            let plan: Plan
            do {
                plan = try Allocation.allocate(shapes: shapes, attention: attention, mlp: mlp, angular: angular, options: options)
            } catch let e as AllocationError {
                throw UsageError(e.description)
            }

            var entries: [TensorEntry] = []
            for (l, p) in plan.layers.enumerated() {
                entries.append(TensorEntry(name: PlanNames.heads(l), dtype: .I32, shape: [p.keptHeads.count]))
                entries.append(TensorEntry(name: PlanNames.kvHeads(l), dtype: .I32, shape: [p.keptKVHeads.count]))
                entries.append(TensorEntry(name: PlanNames.channels(l), dtype: .I32, shape: [p.keptChannels.count]))
                if let rows = p.keptValueDims {
                    entries.append(TensorEntry(name: PlanNames.valueDims(l), dtype: .I32, shape: [rows.count]))
                }
            }
            var out = standardMetadata(tool: "allocate")
            out["format"] = PlanNames.format
            out["fingerprint"] = meta["fingerprint"]
            out["metric"] = meta["metric"]
            out["config"] = configText
            out["biases"] = meta["biases"]
            out["ratio"] = "\(ratio)"
            out["achieved"] = String(format: "%.6f", plan.achieved)
            out["structure"] = blocks.map { "blocks-\($0)" } ?? options.structure!.rawValue
            out["attention_unit"] = unit.rawValue
            out["prune"] = [options.pruneAttention ? "attention" : nil, options.pruneMLP ? "mlp" : nil].compactMap { $0 }.joined(separator: ",")
            out["layers"] = options.layers.map { "\($0.lowerBound)-\($0.upperBound)" } ?? "all"
            out["round"] = round.map(String.init) ?? "none"
            out["min_keep"] = "\(minKeep)"
            out["remove_heads"] = "\(removeHeads)"
            let writer = try TensorFileWriter(path: output, entries: entries, metadata: out)
            try writer.complete {
                for (l, p) in plan.layers.enumerated() {
                    try writer.write(PlanNames.heads(l), integers: p.keptHeads)
                    try writer.write(PlanNames.kvHeads(l), integers: p.keptKVHeads)
                    try writer.write(PlanNames.channels(l), integers: p.keptChannels)
                    if let rows = p.keptValueDims { try writer.write(PlanNames.valueDims(l), integers: rows) }
                }
            }
            if let plot { try PlanPlot.svg(plan, shapes: shapes).write(toFile: plot, atomically: true, encoding: .utf8) }
            if !quiet { printError(PlanPlot.table(plan, shapes: shapes, ratio: ratio)) }
        }
    }
}

Allocate.main()
