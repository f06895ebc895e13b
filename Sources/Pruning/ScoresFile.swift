import Calibration
import Foundation
import LlamaModel
import TensorIO

// The scores file (docs/DESIGN.md "The scores file"): channel scores per layer, written by `score`
// from a model and its statistics, read by `allocate`. This type owns the file's reading, writing,
// checks and error.

/// A scores file that cannot be used: not one, a configuration or bias list that does not
/// decode, a layer whose scores do not fit the configuration, a score that is not finite.
public struct ScoresFileError: BadDataError {
    public var message: String
    public init(_ message: String) { self.message = message }
}

public enum ScoreNames {
    public static func attention(_ l: Int) -> String { "model.layers.\(l).self_attn.o_proj.channel_score" }
    public static func mlp(_ l: Int) -> String { "model.layers.\(l).mlp.down_proj.channel_score" }
    public static let format = "prunekit-scores"
}

public struct ScoresFile {
    public var path: String
    public var metadata: [String: String]
    /// The scored model's configuration (metadata `config`).
    public var config: LlamaConfig
    /// Per layer, the projections that carry a bias (metadata `biases`).
    public var biases: [Set<Projection>]
    /// Per layer: o_proj input channel scores (nil when the metric scores the MLP only), MLP
    /// channel scores, and the block's angular sum (CFSP's budgets).
    public var attention: [[Double]?]
    public var mlp: [[Double]]
    public var angular: [Double]

    /// Reads and checks every layer against the configuration the file carries.
    public init(path: String) throws {
        self.path = path
        let file = try TensorFile(path: path)
        metadata = file.metadata
        if let problem = formatMismatch(metadata, expected: ScoreNames.format, path: path, noun: "scores") {
            throw ScoresFileError(problem)
        }
        guard let configText = metadata["config"] else { throw ScoresFileError("\(path): metadata config is missing") }
        do { config = try LlamaConfig.fromJSON(configText) } catch let e as DiagnosedError {
            throw ScoresFileError("\(path): metadata config: \(e.description)")
        }
        biases = try Self.decodeBiases(metadata["biases"], layers: config.numLayers, path: path)
        let hasAttention = file.header.entry(ScoreNames.attention(0)) != nil
        attention = []
        mlp = []
        angular = []
        for l in 0..<config.numLayers {
            if hasAttention {
                attention.append(try Self.scores(file, ScoreNames.attention(l), count: config.attentionOutputWidth(layer: l), layer: l, what: "attention"))
            } else {
                attention.append(nil)
            }
            mlp.append(try Self.scores(file, ScoreNames.mlp(l), count: config.ffnWidths[l], layer: l, what: "MLP"))
            let angularName = StatNames.block(l, .angularSum)
            guard file.header.entry(angularName) != nil, let a = try file.doubles(angularName).first else {
                throw ScoresFileError("\(path): \(angularName) is missing")
            }
            guard a.isFinite && a >= 0 else { throw ScoresFileError("\(path): layer \(l) has a block angular sum \(a)") }
            angular.append(a)
        }
    }

    /// Whether the metric scored attention channels (CFSP scores the MLP only).
    public var hasAttention: Bool { attention.first.map { $0 != nil } ?? false }

    /// Each layer's shape and biases, as allocation counts parameters.
    public var shapes: [LayerShape] {
        (0..<config.numLayers).map { LayerShape(config: config, layer: $0, biases: biases[$0]) }
    }

    static func scores(_ file: TensorFile, _ name: String, count: Int, layer l: Int, what: String) throws -> [Double] {
        guard file.header.entry(name) != nil else { throw ScoresFileError("\(file.name): \(name) is missing") }
        let values = try file.doubles(name)
        guard values.count == count else {
            throw ScoresFileError("\(file.name): layer \(l) has \(values.count) \(what) scores, the configuration \(count)")
        }
        if let bad = values.first(where: { !$0.isFinite }) {
            throw ScoresFileError("\(file.name): layer \(l) has a \(what) score \(bad)")
        }
        return values
    }

    /// The `biases` metadata: a JSON array, per layer, of the short names (`q_proj`, …) of the
    /// projections that carry a bias.
    static func encodeBiases(_ biases: [Set<Projection>]) -> String {
        let value = JSONValue.array(biases.map { set in
            .array(Projection.allCases.filter(set.contains).map { .string($0.shortName) })
        })
        return String(decoding: value.serialized(), as: UTF8.self)
    }

    static func decodeBiases(_ text: String?, layers: Int, path: String) throws -> [Set<Projection>] {
        guard let text else { throw ScoresFileError("\(path): metadata biases is missing") }
        let invalid = ScoresFileError("\(path): metadata biases must list, for each of the \(layers) layers, the projections that have a bias (e.g. [[\"q_proj\"],[]]); got \(text.prefix(80))")
        let value: JSONValue
        do { value = try JSONValue.parse(Array(text.utf8)) } catch { throw invalid }
        guard let lists = value.items, lists.count == layers else { throw invalid }
        return try lists.map { list in
            guard let names = list.items else { throw invalid }
            return Set(try names.map { name in
                guard let p = name.string.flatMap(Projection.init(shortName:)) else { throw invalid }
                return p
            })
        }
    }

    /// Scores every layer of `model` from its statistics with `metric` and writes the file.
    public static func write(path: String, model: Model, stats: StatisticsFile, metric: ScoreMetric,
                             taylor: TaylorOptions = TaylorOptions(), hywia: HyWIAOptions = HyWIAOptions(),
                             metadata extra: [String: String], progress: (Int) -> Void) throws {
        try stats.requireComplete()
        let fingerprint = try model.fingerprint()
        try stats.requireModel(fingerprint: fingerprint)
        let N = try stats.windows()
        if metric == .taylor || metric == .hywia {
            guard let order = try stats.gradientOrder() else {
                throw StatisticsFileError("\(stats.path): statistics without gradients; \(metric.rawValue) needs calibrate --gradients \(taylor.order == .first ? "first" : "second")")
            }
            if taylor.order != .first && order != "second" {
                throw StatisticsFileError("\(stats.path): --order \(taylor.order.rawValue) needs squared gradients; the statistics have first-order ones only (calibrate --gradients second)")
            }
        }
        if let recipe = stats.metadata["sequential"] {
            try SequentialRecipe.requireSame(recorded: recipe, asked: ["metric": metric.rawValue], source: stats.path, stage: "score")
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
        var meta = extra
        meta["format"] = ScoreNames.format
        meta["fingerprint"] = fingerprint
        meta["metric"] = metric.rawValue
        meta["formula"] = metric.formula
        if metric == .taylor || metric == .hywia { meta["taylor"] = taylor.description }
        if metric == .hywia { meta["hywia"] = hywia.description }
        meta["config"] = try c.jsonString()
        meta["biases"] = encodeBiases((0..<c.numLayers).map { l in Set(Projection.allCases.filter { model.hasBias(l, $0) }) })
        for key in ["samples", "seqlen", "seed", "source", "windows_mode", "data_sha256", "windows_sha256", "sequential",
                    "gradients"] {
            meta["stats_" + key] = stats.metadata[key]
        }
        let writer = try TensorFileWriter(path: path, entries: entries, metadata: meta)
        try writer.complete {
            for l in 0..<c.numLayers {
                let s = try Scoring.score(metric, layer: l, weights: try model.layer(l), stats: stats, windows: N, config: c,
                                          taylor: taylor, hywia: hywia)
                if let a = s.attention { try writer.write(ScoreNames.attention(l), doubles: a) }
                try writer.write(ScoreNames.mlp(l), doubles: s.mlp)
                try writer.write(StatNames.block(l, .count), integers: try stats.blockCount(l))
                try writer.write(StatNames.block(l, .angularSum), doubles: try stats.block(l, .angularSum))
                progress(l + 1)
            }
        }
    }
}
