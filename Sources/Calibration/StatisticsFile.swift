import Foundation
import LlamaModel
import TensorIO

// The statistics file (docs/DESIGN.md "The statistics file"): what `calibrate` writes and
// `score` and `restore` read. This type owns its reading, its checks and its error; the tensor
// names are spelled in `StatNames`, the entries of a run in `StatisticsLayout`.

/// A statistics file that cannot be used as asked: not one, a shard, another model's, a tensor
/// missing or of the wrong width.
public struct StatisticsFileError: BadDataError {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// What scoring and restoring read of one layer's statistics: a statistics file, or a layer's
/// statistics still in memory (`calibrate --sequential` prunes each layer as soon as it has them).
/// `path` names the source in messages.
public protocol StatisticsSource {
    var path: String { get }
    /// The number of calibration windows N.
    func windows() throws -> Int
    /// A point's field of `width` channels (the width the model says it has).
    func point(_ l: Int, _ p: StatPoint, _ field: PointField, width: Int) throws -> [Double]
    /// Tokens seen at a point.
    func count(_ l: Int, _ p: StatPoint) throws -> Int
    /// XᵀX at a point (as stored: rounded to the file's Gram dtype), nil when not collected.
    func gram(_ l: Int, _ p: StatPoint) throws -> [Double]?
}

public final class StatisticsFile: StatisticsSource {
    public let path: String
    public let file: TensorFile
    public var metadata: [String: String] { file.metadata }

    /// Opens and checks the format (a shard is accepted here; see `requireComplete`).
    public init(path: String) throws {
        self.path = path
        file = try TensorFile(path: path)
        if let problem = formatMismatch(file.metadata, expected: StatNames.format, path: path, noun: "statistics") {
            throw StatisticsFileError(problem)
        }
    }

    /// The window count of a source whose metadata does not hold it.
    private var knownWindows: Int?

    /// A tensor file of statistics tensors without the format's metadata (a cached layer's), over
    /// `windows` windows.
    init(statistics file: TensorFile, path: String, windows: Int) {
        self.path = path
        self.file = file
        knownWindows = windows
    }

    /// A shard's indices ("0,2"), nil for a complete file.
    public var shards: String? { metadata["shards"] }

    /// The file covers every window (not a shard).
    public func requireComplete() throws {
        if let shards {
            throw StatisticsFileError("\(path): a shard (\(shards) of \(metadata["shard_count"] ?? "?")); merge the shards first with calibrate merge")
        }
    }

    /// The statistics were computed on the model with this fingerprint.
    public func requireModel(fingerprint: String) throws {
        guard metadata["fingerprint"] == fingerprint else {
            throw StatisticsFileError("\(path): statistics of another model (fingerprint \(metadata["fingerprint"]?.prefix(12) ?? "none"), the model's \(fingerprint.prefix(12)))")
        }
    }

    /// The number of calibration windows N.
    public func windows() throws -> Int {
        if let knownWindows { return knownWindows }
        guard let n = Int(metadata["samples"] ?? ""), n >= 1 else {
            throw StatisticsFileError("\(path): metadata samples is missing or invalid")
        }
        return n
    }

    /// The tensor of a point's field, which must be there.
    public func point(_ l: Int, _ p: StatPoint, _ field: PointField) throws -> [Double] {
        let name = StatNames.point(l, p, field)
        guard file.header.entry(name) != nil else {
            throw StatisticsFileError("\(path): \(name) is missing (statistics of another model or a shard?)")
        }
        let values = try file.doubles(name)
        if let i = values.firstIndex(where: { !$0.isFinite }) {
            throw StatisticsFileError("\(path): \(name) holds \(values[i]) at element \(i) (layer \(l))")
        }
        return values
    }

    /// A point's field of `width` channels (the width the model says it has).
    public func point(_ l: Int, _ p: StatPoint, _ field: PointField, width: Int) throws -> [Double] {
        let values = try point(l, p, field)
        guard values.count == width else {
            throw StatisticsFileError("\(path): layer \(l) statistics at \(p.shortName) have \(values.count) channels, the model \(width)")
        }
        return values
    }

    /// Tokens seen at a point.
    public func count(_ l: Int, _ p: StatPoint) throws -> Int {
        let name = StatNames.point(l, p, .count)
        guard file.header.entry(name) != nil, let n = try file.integers(name).first else {
            throw StatisticsFileError("\(path): \(name) is missing")
        }
        guard n > 0 else { throw StatisticsFileError("\(path): \(name) is \(n): layer \(l) saw no tokens") }
        return n
    }

    /// XᵀX at a point, or nil when the run did not collect it (calibrate --gram).
    public func gram(_ l: Int, _ p: StatPoint) throws -> [Double]? {
        file.header.entry(StatNames.point(l, p, .gram)) == nil ? nil : try point(l, p, .gram)
    }

    /// The gradient statistics the file holds: nil without `calibrate --gradients`. Refuses those
    /// of another loss.
    public func gradientOrder() throws -> String? {
        guard let order = metadata["gradients"] else { return nil }
        guard metadata["gradient_loss"] == GradientLayout.loss else {
            throw StatisticsFileError("\(path): gradients of another loss (\(metadata["gradient_loss"] ?? "unnamed")), not of the \(GradientLayout.loss)")
        }
        return order
    }

    /// Projection p's gradient sum over the N windows (`squared`: of per-window squares), [out, in],
    /// checked to be `shape`.
    public func gradient(_ l: Int, _ p: Projection, squared: Bool, shape: (Int, Int)) throws -> [Float] {
        let name = StatNames.gradient(l, p, squared: squared)
        guard let e = file.header.entry(name) else {
            throw StatisticsFileError("\(path): \(name) is missing (run calibrate --gradients \(squared ? "second" : "first"))")
        }
        guard e.shape == [shape.0, shape.1] else {
            throw StatisticsFileError("\(path): \(name) has shape \(e.shape), the model's weight [\(shape.0), \(shape.1)]")
        }
        return try file.floats(name)
    }

    /// A block statistic of layer l (CFSP's angular sums and their kin).
    public func block(_ l: Int, _ field: BlockField) throws -> [Double] {
        let name = StatNames.block(l, field)
        guard file.header.entry(name) != nil else { throw StatisticsFileError("\(path): \(name) is missing") }
        let values = try file.doubles(name)
        if let bad = values.first(where: { !$0.isFinite }) {
            throw StatisticsFileError("\(path): \(name) holds \(bad) (layer \(l))")
        }
        return values
    }

    public func blockCount(_ l: Int) throws -> [Int] {
        let name = StatNames.block(l, .count)
        guard file.header.entry(name) != nil else { throw StatisticsFileError("\(path): \(name) is missing") }
        return try file.integers(name)
    }

    /// A writer for a statistics file of `layout` for a model of configuration `c`; the
    /// calibrator writes each layer's tensors in order (`LayerStatistics.write`).
    public static func writer(path: String, config c: LlamaConfig, layout: StatisticsLayout,
                              metadata: [String: String]) throws -> TensorFileWriter {
        try TensorFileWriter(path: path, entries: layout.entries(c), metadata: metadata)
    }
}
