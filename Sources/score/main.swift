import ArgumentParser
import Calibration
import Foundation
import Kernels
import LlamaModel
import Pruning
import TensorIO
import ToolSupport

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Importance scores of attention and MLP channels from a model and its calibration statistics.",
        discussion: """
            Writes, per decoder layer, a score per o_proj input channel (head h owns channels h·D …; \
            for FASP each is a V/O dimension) and per MLP channel (down_proj input), and copies the \
            block angular statistics for CFSP's budgets. allocate aggregates channels into heads or \
            KV groups. Metrics:
            \(ScoreMetric.allCases.map { "  \($0.rawValue): \($0.formula)" }.joined(separator: "\n"))

            Example:
              score --model smollm2.st.zst --stats stats.st.zst --metric flap -o scores.st.zst
            """)

    @Option(name: .long, help: "The model the statistics were computed on.")
    var model: String

    @Option(name: .long, help: "Calibration statistics (calibrate).")
    var stats: String

    @Option(name: .long, help: "Metric: \(ScoreMetric.allCases.map(\.rawValue).joined(separator: ", ")).")
    var metric: String

    @Option(name: [.short, .long], help: "Output scores file, or - for standard output.")
    var output: String

    @OptionGroup var common: CommonOptions

    func run() throws {
        try runToolBody("score") {
            installInterruptCleanup()
            if let t = common.threads { BLAS.setThreads(t) }
            try checkBinaryOutput(output)
            guard let metric = ScoreMetric(rawValue: metric) else {
                throw UsageError("unknown metric '\(self.metric)' (\(ScoreMetric.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            let model = try Model.open(self.model)
            let statsFile = try TensorFile(path: stats)
            let meta = statsFile.metadata
            guard meta["format"] == StatNames.format else {
                throw CalibrationError("\(stats): not a statistics file (metadata format is \(meta["format"].map { "'\($0)'" } ?? "missing"))")
            }
            guard meta["shards"] == nil else {
                throw CalibrationError("\(stats): a shard (\(meta["shards"]!) of \(meta["shard_count"] ?? "?")); merge the shards first with calibrate merge")
            }
            let fingerprint = try model.fingerprint()
            guard meta["fingerprint"] == fingerprint else {
                throw CalibrationError("\(stats): statistics of another model (fingerprint \(meta["fingerprint"]?.prefix(12) ?? "none"), the model's \(fingerprint.prefix(12)))")
            }
            guard let N = Int(meta["samples"] ?? ""), N >= 1 else {
                throw CalibrationError("\(stats): metadata samples is missing or invalid")
            }
            let c = model.config
            var entries: [TensorEntry] = []
            for l in 0..<c.numLayers {
                if metric.scoresAttention {
                    entries.append(TensorEntry(name: ScoreNames.attention(l), dtype: .F64, shape: [c.attentionOutputWidth(layer: l)]))
                }
                entries.append(TensorEntry(name: ScoreNames.mlp(l), dtype: .F64, shape: [c.ffnWidths[l]]))
                entries.append(TensorEntry(name: StatNames.block(l, .count), dtype: .I64, shape: [1]))
                entries.append(TensorEntry(name: StatNames.block(l, .angularSum), dtype: .F64, shape: [1]))
            }
            var out = standardMetadata(tool: "score")
            out["format"] = ScoreNames.format
            out["fingerprint"] = fingerprint
            out["metric"] = metric.rawValue
            out["formula"] = metric.formula
            out["config"] = try c.jsonString()
            // Which projections carry a bias, per layer (allocate counts their entries in unit costs).
            let biases = (0..<c.numLayers).map { l in
                "[" + Projection.allCases.filter { model.hasBias(l, $0) }
                    .map { "\"" + String($0.rawValue.split(separator: ".").last!) + "\"" }.joined(separator: ",") + "]"
            }
            out["biases"] = "[" + biases.joined(separator: ",") + "]"
            for key in ["samples", "seqlen", "seed", "source", "windows_mode", "data_sha256", "windows_sha256"] {
                out["stats_" + key] = meta[key]
            }
            let writer = try TensorFileWriter(path: output, entries: entries, metadata: out)
            let progress = Progress("score", total: c.numLayers, unit: "layers", quiet: common.quiet)
            try writer.complete {
                for l in 0..<c.numLayers {
                    let s = try Scoring.score(metric, layer: l, weights: try model.layer(l), stats: statsFile, windows: N)
                    if let a = s.attention { try writer.write(ScoreNames.attention(l), doubles: a) }
                    try writer.write(ScoreNames.mlp(l), doubles: s.mlp)
                    try writer.write(StatNames.block(l, .count), integers: try statsFile.integers(StatNames.block(l, .count)))
                    try writer.write(StatNames.block(l, .angularSum), doubles: try statsFile.doubles(StatNames.block(l, .angularSum)))
                    progress.update(l + 1)
                }
            }
            progress.finish()
        }
    }
}

Score.main()
