import Foundation
import TensorIO

/// Writes a PruneKit model file: Hugging Face tensor names in the canonical order (embedding,
/// layer 0, layer 1, …, final norm, head), the configuration and tokenizer in `__metadata__`.
/// Tensors are written as they come, so that a tool holds one layer at a time.
public final class ModelWriter: WholeFileWriter {
    private let writer: TensorFileWriter
    public let entries: [TensorEntry]

    /// - Parameters:
    ///   - tensors: name and shape of every tensor, in the order they will be written.
    ///   - dtype: the element type of each tensor in the file.
    ///   - metadata: producer, version, arguments, fingerprint… (`format`, `config` and
    ///     `tokenizer` are set here).
    public init(path: String, config: LlamaConfig, tensors: [(name: String, shape: [Int])],
                dtype: (String) -> DType, tokenizerJSON: String?, metadata: [String: String],
                compress: Bool? = nil) throws {
        var meta = metadata
        meta["format"] = ModelFileFormat.name
        meta["config"] = try config.jsonString()
        if let tokenizerJSON { meta["tokenizer"] = tokenizerJSON }
        entries = tensors.map { TensorEntry(name: $0.name, dtype: dtype($0.name), shape: $0.shape) }
        // Level 1: float weights barely compress (F32 ~8%), so speed matters more than ratio.
        writer = try TensorFileWriter(path: path, entries: entries, metadata: meta,
                                      compress: compress, level: 1)
    }

    public func write(_ name: String, _ values: [Float]) throws {
        try writer.write(name, floats: values)
    }

    /// The next tensor from consecutive parts of its values (`TensorFileWriter.write(_:inParts:)`).
    public func write(_ name: String, inParts body: ((UnsafeBufferPointer<Float>) throws -> Void) throws -> Void) throws {
        try writer.write(name, inParts: body)
    }

    public func finish() throws { try writer.finish() }
    public func abort() { writer.abort() }
}

/// The element type a written model keeps: `auto` keeps the source's float type (quantised
/// GGUF tensors become F32, the exact dequantised values).
public enum WeightType: String, CaseIterable, Sendable {
    case auto, f32, f16, bf16

    public func dtype(source: DType) -> DType {
        switch self {
        case .auto: return source
        case .f32: return .F32
        case .f16: return .F16
        case .bf16: return .BF16
        }
    }
}

extension Model {
    /// Copies this model into a model file, tensor by tensor, in the canonical order.
    public func write(to path: String, weightType: WeightType = .auto,
                      metadata: [String: String], progress: ((Int, Int) -> Void)? = nil) throws {
        var meta = metadata
        meta["fingerprint"] = try fingerprint()
        let names = tensorNames
        let writer = try ModelWriter(
            path: path, config: config,
            tensors: names.map { ($0, shape($0) ?? []) },
            dtype: { weightType.dtype(source: self.storageType($0)) },
            tokenizerJSON: tokenizerJSON, metadata: meta)
        try writer.complete {
            for (i, name) in names.enumerated() {
                try copy(name, to: writer, checkFinite: true)
                progress?(i + 1, names.count)
            }
        }
    }
}

extension Model {
    /// Writes tensor `name` unchanged as `writer`'s next tensor; returns its element count. A
    /// tensor beyond `largeTensor` elements of a model that reads rows alone goes a block of rows
    /// at a time (a 128k vocabulary's embedding and head are 2.1 GB each as F32). `checkFinite`:
    /// NaN or ±Inf anywhere is refused, with the tensor and element named.
    @discardableResult
    public func copy(_ name: String, to writer: ModelWriter, checkFinite: Bool = false, largeTensor: Int = 1 << 26) throws -> Int {
        var count = 0
        try writer.write(name) { part in
            try forEachPart(name, largeTensor: largeTensor) { values, first in
                if checkFinite, let j = values.firstIndex(where: { !$0.isFinite }) {
                    throw TensorIOError.badData("\(path): \(name) holds \(values[j]) at element \(first + j)")
                }
                try values.withUnsafeBufferPointer { try part($0) }
                count += values.count
            }
        }
        return count
    }

    /// Tensor `name`'s values in order: whole, or — a tensor of two or more dimensions beyond
    /// `largeTensor` elements, of a model that reads rows alone — a block of rows (about a
    /// sixteenth of `largeTensor` elements) at a time. `body(values, index of their first element)`.
    func forEachPart(_ name: String, largeTensor: Int, _ body: ([Float], Int) throws -> Void) throws {
        let shape = self.shape(name) ?? []
        let rows = shape.first ?? 1, count = shape.reduce(1, *)
        guard store.readsRows, shape.count >= 2, count > largeTensor else { return try body(try floats(name), 0) }
        let width = count / max(rows, 1), block = max(1, largeTensor / 16 / max(width, 1))
        for first in stride(from: 0, to: rows, by: block) {
            try body(try store.rows(name, Array(first..<min(rows, first + block))), first * width)
        }
    }
}
