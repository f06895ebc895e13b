import Foundation
import LlamaModel
import TensorIO

/// One calibration run: the dense model over the windows, layer by layer, every layer's
/// statistics written to the output as soon as the layer is done (so that Gram matrices of
/// all layers are never in memory together).
public struct Calibrator {
    public let model: Model
    public let windows: CalibrationWindows
    /// The windows of this run: all, or one shard's contiguous range.
    public let range: Range<Int>
    public let layout: StatisticsLayout
    /// (i, n) for shard i of n.
    public let shard: (index: Int, count: Int)?
    /// Windows per batch of the forward pass. Batches are counted from the first window of all,
    /// and shards hold whole batches, so that every batch holds the same windows in a shard as in
    /// one run over all windows (sgemm's float32 rounding depends on the number of rows).
    public let batchWindows: Int

    /// - batchRows: rows per batch of the forward pass, rounded down to whole windows (at least one).
    public init(model: Model, windows: CalibrationWindows, shard: (index: Int, count: Int)? = nil,
                gramPoints: Set<StatPoint> = [], gramDType: DType = .F32, batchRows: Int = 4096) throws {
        self.model = model
        self.windows = windows
        self.shard = shard
        batchWindows = max(1, batchRows / max(windows.length, 1))
        if let shard {
            guard shard.count >= 1, shard.index >= 0, shard.index < shard.count else {
                throw CalibrationError("shard \(shard.index)/\(shard.count) is not one of 0/\(shard.count) … \(shard.count - 1)/\(shard.count)", kind: .usage)
            }
            range = Self.shardRange(shard.index, of: shard.count, windows: windows.count, batchWindows: batchWindows)
            guard !range.isEmpty else {
                throw CalibrationError("shard \(shard.index)/\(shard.count) is empty: \(windows.count) windows make only \((windows.count + batchWindows - 1) / batchWindows) batches of \(batchWindows) to share", kind: .usage)
            }
        } else {
            range = 0..<windows.count
        }
        layout = StatisticsLayout(gramPoints: gramPoints, gramDType: gramDType, windows: range.count,
                                  complete: shard == nil || shard!.count == 1)
        guard windows.length <= model.config.maxPositionEmbeddings else {
            throw CalibrationError("windows of \(windows.length) tokens exceed the model's context of \(model.config.maxPositionEmbeddings)", kind: .usage)
        }
    }

    /// Shard i of n: the windows of batches ⌊i·B/n⌋ ..< ⌊(i+1)·B/n⌋ of the B batches of
    /// `batchWindows` windows.
    public static func shardRange(_ i: Int, of n: Int, windows N: Int, batchWindows W: Int) -> Range<Int> {
        let B = (N + W - 1) / W
        return min(N, (i * B / n) * W)..<min(N, ((i + 1) * B / n) * W)
    }

    /// The statistics file's metadata (without the tool's standard keys).
    public func metadata(fingerprint: String, source: CalibrationSource, seed: UInt64) -> [String: String] {
        var m: [String: String] = [
            "format": StatNames.format,
            "fingerprint": fingerprint,
            "samples": "\(windows.count)",
            "seqlen": "\(windows.length)",
            "seed": "\(seed)",
            "source": source.path,
            "windows_mode": windows.mode,
            "data_sha256": windows.dataSHA256,
            "windows_sha256": windows.sha256,
            "gram": StatPoint.allCases.filter { layout.gramPoints.contains($0) }.map(\.shortName).joined(separator: ","),
            "gram_dtype": layout.gramDType.rawValue,
            "windows_in_file": "\(range.count)",
            "batch_windows": "\(batchWindows)",
        ]
        if !layout.complete, let shard {
            m["shards"] = "\(shard.index)"
            m["shard_count"] = "\(shard.count)"
        }
        return m
    }

    /// Runs the model and writes every layer's statistics to `writer` (whose entries must be
    /// `layout.entries(model.config)`). `progress(layer)` after each layer.
    public func run(into writer: TensorFileWriter, progress: ((Int) -> Void)? = nil) throws {
        let c = model.config, T = windows.length
        let runner = Runner(model: model, maxPositions: T)
        runner.batchRows = batchWindows * T
        let ids = Array(windows.ids[range.lowerBound * T..<range.upperBound * T])
        let x = try runner.embed(ids, embedding: try model.embedding())
        var current = LayerStatistics(layer: 0, config: c, layout: layout, windowLength: T)
        try runner.runLayers(x, rows: ids.count, windowLength: T, layers: 0..<c.numLayers,
                             events: { _, event in current.observe(event) },
                             layerDone: { l in
                                 try current.write(to: writer, layout: layout)
                                 progress?(l + 1)
                                 if l + 1 < c.numLayers {
                                     current = LayerStatistics(layer: l + 1, config: c, layout: layout, windowLength: T)
                                 }
                             })
    }
}
