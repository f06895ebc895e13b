import Foundation
import LlamaModel
import TensorIO

// What `calibrate` does, as one library call: draw the windows, run the model over them layer by
// layer (from a cache where it has one), and write the statistics file.

/// A calibration run as `calibrate` is asked for it.
public struct CalibrationRequest {
    public var source: CalibrationSource
    public var samples = 128
    public var length = 2048
    public var seed: UInt64 = 0
    public var gramPoints: Set<StatPoint> = []
    public var gramDType = DType.F32
    /// Shard i of n (i counted from 0).
    public var shard: (index: Int, count: Int)?
    /// Also write the windows used to this file (the --tokens format).
    public var dumpWindows: String?
    public var cache: String?
    public var cacheDType = DType.F32
    /// Every layer's statistics from the cached inputs.
    public var fromCache = false
    /// Sequential calibration: each layer pruned by this as soon as its statistics are complete.
    public var pruner: LayerPruner?
    /// Gradient statistics (`--gradients`), from a forward and backward pass before the statistics'.
    public var gradients: GradientLayout?

    public init(source: CalibrationSource) { self.source = source }
}

/// How a run went, for its summary line.
public struct CalibrationSummary {
    public var windows: Int
    public var length: Int
    public var mode: String
    public var seconds: Double
}

extension StatPoint {
    /// The points of a comma-separated list of module names (`o_proj,down_proj`).
    public static func list(_ text: String) throws -> Set<StatPoint> {
        var points = Set<StatPoint>()
        for name in text.split(separator: ",") {
            guard let p = StatPoint(module: name.trimmingCharacters(in: .whitespaces)) else {
                throw CalibrationError("--gram: unknown point '\(name)' (q_proj, o_proj, gate_proj, down_proj)", kind: .usage)
            }
            points.insert(p)
        }
        return points
    }
}

/// `i/n` with 0 ≤ i < n.
public func parseShard(_ text: String) throws -> (index: Int, count: Int) {
    let parts = text.split(separator: "/")
    guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
        throw CalibrationError("--shard must be i/n with 0 ≤ i < n, got '\(text)'", kind: .usage)
    }
    return (i, n)
}

/// Refuses, before anything is drawn or allocated, windows whose hidden states ([samples × length,
/// C] float32, the part of one shard) would not fit in this machine's memory.
func checkMemory(_ request: CalibrationRequest, hidden C: Int) throws {
    let shards = request.shard?.count ?? 1
    let (tokens, overflow) = request.samples.multipliedReportingOverflow(by: request.length)
    let perShard = overflow ? Double.infinity : Double(tokens) / Double(shards)
    let bytes = perShard * Double(C) * 4
    let memory = Double(ProcessInfo.processInfo.physicalMemory)
    guard bytes <= memory * 0.8 else {
        func size(_ b: Double) -> String {
            b.isInfinite ? "more than 2⁶³ bytes" : b >= 1e12 ? String(format: "%.0f TB", b / 1e12) : String(format: "%.1f GB", b / 1e9)
        }
        throw CalibrationError("--samples \(request.samples) × --seqlen \(request.length) need \(size(bytes)) of hidden states ([tokens, \(C)] float32\(shards > 1 ? " for one of \(shards) shards" : "")); this machine has \(size(memory)): draw fewer windows or split them with --shard", kind: .usage)
    }
}

extension Calibrator {
    /// Runs `request` on `model` and writes the statistics to `output`; `metadata` holds the
    /// tool's standard keys (also given to the windows file). `note` receives remarks on the
    /// windows drawn, `progress` the layers done.
    public static func run(_ request: CalibrationRequest, model: Model, output: String, metadata: [String: String],
                           note: (String) -> Void = { _ in }, progress: @escaping (Int) -> Void = { _ in },
                           gradientProgress: @escaping (Int, Int) -> Void = { _, _ in }) throws -> CalibrationSummary {
        if request.gradients != nil && (request.pruner != nil || request.cache != nil || request.fromCache) {
            throw CalibrationError("--gradients runs on the dense model without the activation cache: not with --sequential, --cache or --from-cache", kind: .usage)
        }
        if request.pruner != nil && (request.fromCache || request.shard != nil) {
            throw CalibrationError("--sequential runs every window through every layer in turn: not with --from-cache or --shard", kind: .usage)
        }
        if case .tokens = request.source {} else if request.length > model.config.maxPositionEmbeddings {
            throw CalibrationError("--seqlen \(request.length) exceeds the model's context of \(model.config.maxPositionEmbeddings) tokens", kind: .usage)
        }
        if case .tokens = request.source {} else { try checkMemory(request, hidden: model.config.hiddenSize) }
        // Through the model, so that a tokenizer that does not load is named by the model's path.
        let tokenizer = model.tokenizerJSON == nil ? nil : try model.tokenizer()
        let windows = try CalibrationWindows.draw(request.source, tokenizer: tokenizer, samples: request.samples,
                                                  length: request.length, seed: request.seed,
                                                  vocabularySize: model.config.vocabSize)
        if let text = windows.note { note(text) }
        let calibrator = try Calibrator(model: model, windows: windows, shard: request.shard,
                                        gramPoints: request.gramPoints, gramDType: request.gramDType,
                                        gradients: request.gradients)
        if let path = request.dumpWindows {
            let (entry, bytes) = windows.tensor()
            try writeTensorFile(path: path, tensors: [(entry, bytes)], metadata: metadata.merging(
                ["seed": "\(request.seed)", "source": request.source.path, "windows_mode": windows.mode,
                 "sha256": windows.sha256]) { $1 })
        }
        let fingerprint = try model.fingerprint()
        let activationCache = try request.cache.map {
            try ActivationCache(directory: $0, element: request.cacheDType, fingerprint: fingerprint, windows: windows,
                                range: calibrator.range, batchWindows: calibrator.batchWindows,
                                variant: request.pruner.map { "sequential " + $0.settings } ?? "one-pass")
        }
        var meta = calibrator.metadata(fingerprint: fingerprint, source: request.source, seed: request.seed)
            .merging(metadata) { $1 }
        if let pruner = request.pruner { meta["sequential"] = pruner.settings }
        // Statistics of BF16-cached inputs are not the forward's: shards of both must not merge.
        meta["layer_inputs"] = request.fromCache && request.cacheDType == .BF16 ? "bf16 cache" : "forward"
        let start = Date()
        // The gradient pass first: it may fail on the data (a NaN), and then nothing is written.
        let gradients = try request.gradients.map { try calibrator.gradientSums(second: $0.second, progress: gradientProgress) }
        let writer = try StatisticsFile.writer(path: output, config: model.config, layout: calibrator.layout, metadata: meta)
        try writer.complete {
            if let pruner = request.pruner {
                try calibrator.runSequential(into: writer, pruner: pruner, cache: activationCache, progress: progress)
            } else {
                try calibrator.run(into: writer, cache: activationCache, fromCache: request.fromCache, gradients: gradients,
                                   progress: progress)
            }
        }
        return CalibrationSummary(windows: calibrator.range.count, length: windows.length, mode: windows.mode,
                                  seconds: Date().timeIntervalSince(start))
    }
}
