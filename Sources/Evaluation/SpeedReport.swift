import Foundation
import Kernels
import LlamaModel
import TensorIO

// What pruning bought (`evaluate --report`): a model's size and cost, counted from its
// configuration, and its speed, measured on this machine.
//
// Counts per token at context T (a window of T tokens, so that a token sees (T+1)/2 keys on
// average): MACs = every decoder linear weight + the head (V·C) + per layer and query head h of KV
// head g: D·(T+1)/2 for q·kᵀ and w_g·(T+1)/2 for p·v (w_g the value width).

public struct SpeedReport: Codable, Sendable {
    public var model: String
    public var parameters: Int
    public var decoderLinearParameters: Int
    public var fileBytes: Int
    /// MACs per token at T = 128 and 2048.
    public var macsPerToken128: Double
    public var macsPerToken2048: Double
    /// Tokens/s of a forward pass over windows of T = 128 and 2048 tokens.
    public var prefillTokensPerSecond128: Double
    public var prefillTokensPerSecond2048: Double
    /// Tokens/s of incremental decoding at batch 1 after a context of 128 and 1024 tokens.
    public var decodeTokensPerSecond128: Double
    public var decodeTokensPerSecond1024: Double
    /// The measuring process's peak resident memory in MB (VmHWM), filled in by the caller (the
    /// process must have measured this one model only); 0 when not measured.
    public var peakResidentMB: Double = 0
    /// The kernels OpenBLAS ran (its core type, `BLAS.coreName`).
    public var blasCore: String = BLAS.coreName

    enum CodingKeys: String, CodingKey {
        case model, parameters
        case decoderLinearParameters = "decoder_linear_parameters", fileBytes = "file_bytes"
        case macsPerToken128 = "macs_per_token_128", macsPerToken2048 = "macs_per_token_2048"
        case prefillTokensPerSecond128 = "prefill_tokens_per_second_128"
        case prefillTokensPerSecond2048 = "prefill_tokens_per_second_2048"
        case decodeTokensPerSecond128 = "decode_tokens_per_second_128"
        case decodeTokensPerSecond1024 = "decode_tokens_per_second_1024"
        case peakResidentMB = "peak_rss_mb", blasCore = "blas_core"
    }

    /// Multiply-accumulates per token at context T.
    public static func macsPerToken(_ c: LlamaConfig, T: Int) -> Double {
        var macs = Double(c.layerLinearParameters() + c.vocabSize * c.hiddenSize)
        let keys = Double(T + 1) / 2
        for l in 0..<c.numLayers where c.headCounts[l] > 0 {
            let rep = c.headCounts[l] / c.kvHeadCounts[l]
            for w in c.valueWidths(layer: l) { macs += Double(rep) * Double(c.headDim + w) * keys }
        }
        return macs
    }

    /// Measures `model` (at `path`) with its layers loaded once: prefill over `windows` windows of
    /// each length after an untimed warm-up window, and decoding `steps` tokens after each context
    /// (speed does not depend on which ids: a fixed pattern).
    public static func measure(_ model: Model, path: String, windows: Int = 2, steps: Int = 64) throws -> SpeedReport {
        let c = model.config
        let tokens = (0..<4096).map { Int32(($0 * 7919 + 13) % c.vocabSize) }
        let runner = Runner(model: model, maxPositions: max(2048, 1024 + steps))
        try runner.keepLayers()
        let embedding = try runner.embeddingTable()
        func prefill(_ T: Int) throws -> Double {
            guard T <= c.maxPositionEmbeddings else { return 0 }
            let batch = (0..<windows).map { w in (0..<T).map { tokens[(w * T + $0) % tokens.count] } }
            _ = try runner.windowNLL([batch[0]])
            let start = Date()
            _ = try runner.windowNLL(batch)
            return Double(windows * T) / Date().timeIntervalSince(start)
        }
        func decode(_ context: Int) throws -> Double {
            guard context + steps <= c.maxPositionEmbeddings else { return 0 }
            let cache = KVCache(config: c, capacity: context + steps)
            _ = try runner.step((0..<context).map { tokens[$0 % tokens.count] }, cache: cache, embedding: embedding)
            let start = Date()
            for i in 0..<steps { _ = try runner.step([tokens[(context + i) % tokens.count]], cache: cache, embedding: embedding) }
            return Double(steps) / Date().timeIntervalSince(start)
        }
        return SpeedReport(
            model: path, parameters: model.totalParameters, decoderLinearParameters: model.layerLinearParameters,
            fileBytes: try fileBytes(path), macsPerToken128: macsPerToken(c, T: 128), macsPerToken2048: macsPerToken(c, T: 2048),
            prefillTokensPerSecond128: try prefill(128), prefillTokensPerSecond2048: try prefill(2048),
            decodeTokensPerSecond128: try decode(128), decodeTokensPerSecond1024: try decode(1024))
    }

    /// The bytes of a file, or of every file in a directory (0 for standard input).
    static func fileBytes(_ path: String) throws -> Int {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard path != "-", fm.fileExists(atPath: path, isDirectory: &isDirectory) else { return 0 }
        do {
            let files = isDirectory.boolValue ? try fm.contentsOfDirectory(atPath: path).map { path + "/" + $0 } : [path]
            return try files.reduce(0) { $0 + (try fm.attributesOfItem(atPath: $1)[.size] as? Int ?? 0) }
        } catch {
            throw TensorIOError.io("\(path): \(error.localizedDescription)")
        }
    }

    /// The rows `evaluate --report` prints: this model, and the comparison's with ratios.
    public func table(compare dense: SpeedReport?) -> [String] {
        let rows: [(String, (SpeedReport) -> Double, String)] = [
            ("parameters", { Double($0.parameters) }, "%.0f"),
            ("decoder linear parameters", { Double($0.decoderLinearParameters) }, "%.0f"),
            ("file MB", { Double($0.fileBytes) / 1e6 }, "%.1f"),
            ("GMACs/token at T=128", { $0.macsPerToken128 / 1e9 }, "%.4f"),
            ("GMACs/token at T=2048", { $0.macsPerToken2048 / 1e9 }, "%.4f"),
            ("prefill tokens/s, T=128", { $0.prefillTokensPerSecond128 }, "%.1f"),
            ("prefill tokens/s, T=2048", { $0.prefillTokensPerSecond2048 }, "%.1f"),
            ("decode tokens/s, context 128", { $0.decodeTokensPerSecond128 }, "%.1f"),
            ("decode tokens/s, context 1024", { $0.decodeTokensPerSecond1024 }, "%.1f"),
            ("peak memory MB", { $0.peakResidentMB }, "%.0f"),
        ]
        func cell(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
        var lines = ["measure".padding(toLength: 30, withPad: " ", startingAt: 0) + cell("this model", 16)
            + (dense == nil ? "" : cell("compared", 16) + cell("ratio", 9))]
        for (name, value, format) in rows {
            var line = name.padding(toLength: 30, withPad: " ", startingAt: 0) + cell(String(format: format, value(self)), 16)
            if let dense {
                let d = value(dense)
                line += cell(String(format: format, d), 16) + cell(d > 0 ? String(format: "%.3f×", value(self) / d) : "—", 9)
            }
            lines.append(line)
        }
        lines.append("OpenBLAS kernels".padding(toLength: 30, withPad: " ", startingAt: 0) + cell(blasCore, 16)
            + (dense.map { cell($0.blasCore, 16) } ?? ""))
        return lines
    }
}
