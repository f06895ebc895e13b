import Foundation
import LlamaModel
import TensorIO

/// Prunes each layer as soon as its statistics are complete (`calibrate --sequential`), so that
/// the next layer's statistics are those of the pruned layers' outputs.
public protocol LayerPruner: AnyObject {
    /// What the pruning depends on besides the model and the windows (part of the cache's key).
    var settings: String { get }
    /// Layer l pruned, from its dense weights and its statistics, and the configuration of the
    /// model pruned so far (layer l's widths as pruned). Called once per layer, in order.
    func prune(layer l: Int, weights: LayerWeights, statistics: any StatisticsSource) throws
        -> (weights: LayerWeights, config: LlamaConfig)
    /// Layer l, once pruned, computes its attention half exactly as the dense layer does (known
    /// before its statistics): the pruned pass then runs only the MLP half.
    func keepsAttentionWhole(layer l: Int) throws -> Bool
}

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
                gramPoints: Set<StatPoint> = [], gramDType: DType = .F32, gradients: GradientLayout? = nil,
                batchRows: Int = 4096) throws {
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
                let batches = (windows.count + batchWindows - 1) / batchWindows
                throw CalibrationError("shard \(shard.index)/\(shard.count) is empty: \(windows.count) windows make only \(batches) batch\(batches == 1 ? "" : "es") of \(batchWindows) to share among \(shard.count) shards", kind: .usage)
            }
        } else {
            range = 0..<windows.count
        }
        layout = StatisticsLayout(gramPoints: gramPoints, gramDType: gramDType, windows: range.count,
                                  complete: shard == nil || shard!.count == 1, gradients: gradients)
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
        if let g = layout.gradients {
            m["gradients"] = g.second ? "second" : "first"
            m["grad_dtype"] = g.dtype.rawValue
            m["gradient_loss"] = GradientLayout.loss
        }
        if !layout.complete, let shard {
            m["shards"] = "\(shard.index)"
            m["shard_count"] = "\(shard.count)"
        }
        return m
    }

    /// What the statistics of a layer depend on besides the windows (the cache key of a layer's
    /// statistics).
    public var settings: String {
        "gram=\(StatPoint.allCases.filter { layout.gramPoints.contains($0) }.map(\.shortName).joined(separator: ","));"
            + "gram_dtype=\(layout.gramDType.rawValue);complete=\(layout.complete);windows=\(layout.windows)"
    }

    /// Runs the model and writes every layer's statistics to `writer` (whose entries must be
    /// `layout.entries(model.config)`). `progress(layer)` after each layer.
    ///
    /// With a cache: layers whose statistics are cached for these settings are copied (the
    /// first layer without them is computed from its cached input, or from the nearest earlier
    /// cached input, or from the embedding), and every layer computed stores its statistics and
    /// the next layer's input. With `fromCache`, every layer's statistics are computed from its
    /// cached input alone (no forward pass through earlier layers).
    ///
    /// With gradients in the layout, `gradients` (the gradient pass's sums) go into each layer's
    /// entries and the loss at the end.
    public func run(into writer: TensorFileWriter, cache: ActivationCache? = nil, fromCache: Bool = false,
                    gradients: GradientSums? = nil, progress: ((Int) -> Void)? = nil) throws {
        let c = model.config, T = windows.length, L = c.numLayers, C = c.hiddenSize
        guard (layout.gradients == nil) == (gradients == nil) else {
            throw CalibrationError("gradient statistics asked without their gradient pass (or given unasked)", kind: .usage)
        }
        if gradients != nil && (cache != nil || fromCache) {
            throw CalibrationError("--gradients does not use the activation cache: run it without --cache", kind: .usage)
        }
        let runner = Runner(model: model, maxPositions: T)
        runner.batchRows = batchWindows * T
        let rows = range.count * T
        let all = layout.entries(c)
        func entries(_ l: Int) -> [TensorEntry] { all.filter { $0.name.hasPrefix("model.layers.\(l).") } }
        func finish(_ stats: LayerStatistics) throws {
            let sums = gradients?.layer(stats.layer)
            stats.gradient = sums?.first
            stats.gradientSquares = sums?.second
            try stats.write(to: writer, layout: layout)
            if let cache {
                let w = try cache.statisticsWriter(stats.layer, entries: entries(stats.layer), settings: settings)
                try stats.write(to: w, layout: layout)
                try w.finish()
            }
            progress?(stats.layer + 1)
        }
        func load(_ l: Int) throws -> Buffer? {
            guard let cache, let values = try cache.input(l, count: rows * C) else { return nil }
            let x = Buffer(count: rows * C)
            values.withUnsafeBufferPointer { x.pointer.update(from: $0.baseAddress!, count: rows * C) }
            return x
        }

        if fromCache {
            guard cache != nil else { throw CalibrationError("--from-cache needs --cache DIR", kind: .usage) }
            for l in 0..<L {
                guard let x = try load(l) else {
                    throw CalibrationError("\(cache!.directory.path): no cached input of layer \(l) for this model and these windows (run once with --cache first)", kind: .missingInput)
                }
                let stats = LayerStatistics(layer: l, config: c, layout: layout, windowLength: T)
                try runner.runLayers(x, rows: rows, windowLength: T, layers: l..<(l + 1),
                                     events: { _, event in stats.observe(event) })
                try finish(stats)
            }
            return
        }

        // Layers whose statistics are cached are copied.
        var first = 0
        if let cache {
            while first < L, let file = try cache.statistics(first, settings: settings) {
                for e in entries(first) {
                    guard let have = file.header.entry(e.name), have.dtype == e.dtype, have.shape == e.shape else {
                        throw CalibrationError("\(cache.statsPath(first)): \(e.name) does not match the settings; remove the cache folder")
                    }
                    try file.withBytes(e.name) { try writer.write(e.name, bytes: $0) }
                }
                first += 1
                progress?(first)
            }
        }
        guard first < L else { return }

        // The input of the first layer to compute.
        let ids = Array(windows.ids[range.lowerBound * T..<range.upperBound * T])
        var x: Buffer
        if first > 0, let cached = try load(first) {
            x = cached
        } else {
            var start = first
            var from: Buffer? = nil
            while start > 0 {
                if let cached = try load(start) { from = cached; break }
                start -= 1
            }
            x = try from ?? runner.embed(ids, embedding: try runner.embeddingTable())
            if start == 0, from == nil { try cache?.storeInput(0, x.pointer, count: rows * C) }
            if start < first {
                try runner.runLayers(x, rows: rows, windowLength: T, layers: start..<first, events: nil) { l in
                    try cache?.storeInput(l + 1, x.pointer, count: rows * C)
                }
            }
        }
        var current = LayerStatistics(layer: first, config: c, layout: layout, windowLength: T)
        try runner.runLayers(x, rows: rows, windowLength: T, layers: first..<L,
                             events: { _, event in current.observe(event) },
                             layerDone: { l in
                                 try finish(current)
                                 if l + 1 < L {
                                     try cache?.storeInput(l + 1, x.pointer, count: rows * C)
                                     current = LayerStatistics(layer: l + 1, config: c, layout: layout, windowLength: T)
                                 }
                             })
        if let gradients {
            try writer.write(StatNames.lossSum, doubles: [gradients.loss.sum])
            try writer.write(StatNames.lossCount, integers: [gradients.loss.count])
        }
    }

    /// Sequential calibration: layer l's statistics are measured on the outputs of layers
    /// 0 ..< l as `pruner` pruned them. Per layer: the dense layer runs on a copy of its input,
    /// batch by batch, for the statistics (its outputs are discarded), the pruner prunes it, and
    /// the pruned layer runs on the input in place, making the next layer's input.
    ///
    /// With a cache (keyed by the pruner's settings too): a rerun copies the statistics of the
    /// layers already done, has the pruner replay its decisions from them, and resumes from the
    /// last cached input; a cache of another model, windows or recipe is refused.
    public func runSequential(into writer: TensorFileWriter, pruner: LayerPruner, cache: ActivationCache? = nil,
                              progress: ((Int) -> Void)? = nil) throws {
        guard layout.gradients == nil else {
            throw CalibrationError("--gradients is a property of the dense model: not with --sequential", kind: .usage)
        }
        guard layout.complete else {
            throw CalibrationError("--sequential cannot run on a shard: every layer must be pruned from the statistics of all windows", kind: .usage)
        }
        let c = model.config, T = windows.length, L = c.numLayers, C = c.hiddenSize
        let runner = Runner(model: model, maxPositions: T)
        runner.batchRows = batchWindows * T
        let rows = range.count * T
        let settings = self.settings + ";sequential=" + pruner.settings + ";angular=pruned-output"
        let all = layout.entries(c)
        func entries(_ l: Int) -> [TensorEntry] { all.filter { $0.name.hasPrefix("model.layers.\(l).") } }

        // Resume: the longest run of layers with cached statistics whose last input is cached too.
        var first = 0
        var resumeInput: [Float]?
        if let cache {
            try cache.refuseOthers(layers: L)
            var cached: [TensorFile] = []
            while cached.count < L, let file = try cache.statistics(cached.count, settings: settings) { cached.append(file) }
            first = cached.count
            if first < L {
                while first > 0 {
                    if let values = try cache.input(first, count: rows * C) { resumeInput = values; break }
                    first -= 1
                }
            }
            for (l, file) in cached.prefix(first).enumerated() {
                for e in entries(l) {
                    guard let have = file.header.entry(e.name), have.dtype == e.dtype, have.shape == e.shape else {
                        throw CalibrationError("\(cache.statsPath(l)): \(e.name) does not match the settings; remove the cache folder")
                    }
                    try file.withBytes(e.name) { try writer.write(e.name, bytes: $0) }
                }
                _ = try pruner.prune(layer: l, weights: try model.layer(l),
                                     statistics: StatisticsFile(statistics: file, path: cache.statsPath(l), windows: layout.windows))
                progress?(l + 1)
            }
        }
        guard first < L else { return }
        let x: Buffer
        if let values = resumeInput {
            x = Buffer(count: rows * C)
            values.withUnsafeBufferPointer { x.pointer.update(from: $0.baseAddress!, count: rows * C) }
            resumeInput = nil  // one copy of the activations, not two
        } else {
            let ids = Array(windows.ids[range.lowerBound * T..<range.upperBound * T])
            x = try runner.embed(ids, embedding: try runner.embeddingTable())
        }
        // The post-attention residual, for layers whose attention stays whole: as large as the
        // activations, so beyond 1 GiB in a temporary file (written and read once a layer, far
        // cheaper than the attention it saves at 7B).
        var residual: ScratchFloats?
        for l in first..<L {
            let w = try model.layer(l)
            let stats = LayerStatistics(layer: l, config: c, layout: layout, windowLength: T)
            let reuse = try pruner.keepsAttentionWhole(layer: l)
            if reuse && residual == nil {
                residual = try ScratchFloats(count: rows * C, memoryLimit: 1 << 30, name: "the post-attention residual")
            }
            // The dense layer on a copy of the input, for the statistics: down_proj's output is
            // not needed (its input is the last tap).
            try runner.runLayer(w, config: c, layer: l, x: x, rows: rows, windowLength: T, inPlace: false, part: .untilDown,
                                residual: reuse ? residual : nil, events: { stats.observe($0) })
            let (pruned, prunedConfig) = try pruner.prune(
                layer: l, weights: w, statistics: LayerStatisticsSource(stats, layout: layout, path: "layer \(l)'s statistics"))
            // The pruned layer in place, making the next input; the block's angular distance is
            // measured between its input and this pruned output.
            try runner.runLayer(pruned, config: prunedConfig, layer: l, x: x, rows: rows, windowLength: T,
                                part: reuse ? .mlp : .whole, residual: reuse ? residual : nil, events: { event in
                                    if case .tap = event { return }
                                    stats.observe(event)
                                })
            try stats.write(to: writer, layout: layout)
            if let cache {
                // The next input first, then the statistics: a layer counts as done only with both.
                if l + 1 < L { try cache.storeInput(l + 1, x.pointer, count: rows * C) }
                let sw = try cache.statisticsWriter(l, entries: entries(l), settings: settings)
                try stats.write(to: sw, layout: layout)
                try sw.finish()
            }
            progress?(l + 1)
        }
    }
}
