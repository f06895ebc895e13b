import Foundation
import Kernels
import TensorIO

// A model whose value heads V/O pruning narrowed (`LlamaConfig.valueWidths`), seen with every value
// head padded back to head_dim: KV head g's w_g value rows are followed by D − w_g zero rows, and each
// of its query heads' w_g o_proj columns by D − w_g zero columns. The zero values give zero attention
// outputs, which meet zero columns, so the padded model computes exactly what the narrowed one does,
// in the shapes transformers' LLaMA and llama.cpp hold (its attention is no smaller than the dense one).

/// Forwards every tensor but v_proj (weight, bias) and o_proj's weight, which it pads.
final class PaddedValueStore: TensorStore {
    private let base: TensorStore
    private let source: LlamaConfig
    /// v_proj weight, v_proj bias, o_proj weight → layer.
    private var values: [String: Int] = [:], valueBiases: [String: Int] = [:], outputs: [String: Int] = [:]

    init(base: TensorStore, source: LlamaConfig) {
        self.base = base
        self.source = source
        for l in 0..<source.numLayers {
            values[TensorNames.weight(l, .v)] = l
            valueBiases[TensorNames.bias(l, .v)] = l
            outputs[TensorNames.weight(l, .o)] = l
        }
    }

    var names: [String] { base.names }
    func storageType(_ name: String) -> DType { base.storageType(name) }

    func shape(_ name: String) -> [Int]? {
        guard let s = base.shape(name) else { return nil }
        let D = source.headDim
        if let l = values[name] { return [source.kvHeadCounts[l] * D, s[1]] }
        if let l = valueBiases[name] { return [source.kvHeadCounts[l] * D] }
        if let l = outputs[name] { return [s[0], source.headCounts[l] * D] }
        return s
    }

    var readsRows: Bool { base.readsRows }

    func rows(_ name: String, _ ids: [Int]) throws -> [Float] {
        values[name] ?? valueBiases[name] ?? outputs[name] == nil ? try base.rows(name, ids) : try defaultRows(name, ids)
    }

    func floats(_ name: String) throws -> [Float] {
        let x = try base.floats(name)
        let D = source.headDim
        if let l = values[name] ?? valueBiases[name] {
            // Rows: each KV head's w_g rows, then zero rows up to D.
            let width = values[name] != nil ? source.hiddenSize : 1
            let layout = source.valueLayout(layer: l)
            var out = [Float](repeating: 0, count: source.kvHeadCounts[l] * D * width)
            for g in 0..<source.kvHeadCounts[l] {
                let from = layout.rows(ofGroup: g).lowerBound
                for r in 0..<layout.widths[g] {
                    for j in 0..<width { out[(g * D + r) * width + j] = x[(from + r) * width + j] }
                }
            }
            return out
        }
        if let l = outputs[name] {
            // Columns: each query head's w_g columns, then zero columns up to D.
            let H = source.headCounts[l], rows = source.hiddenSize
            let layout = source.valueLayout(layer: l), inWidth = layout.columnCount
            var out = [Float](repeating: 0, count: rows * H * D)
            for i in 0..<rows {
                for h in 0..<H {
                    for (e, c) in layout.columns(ofHead: h).enumerated() { out[i * H * D + h * D + e] = x[i * inWidth + c] }
                }
            }
            return out
        }
        return x
    }
}

extension Model {
    /// The model with every narrowed value head padded with zeros to head_dim (itself when none
    /// is narrowed): the same outputs, in a form transformers and llama.cpp can hold.
    public func paddingValueHeads() throws -> Model {
        guard config.valueWidths != nil else { return self }
        var c = config
        c.valueWidths = nil
        return try Model(config: c, tokenizerJSON: tokenizerJSON, store: PaddedValueStore(base: store, source: config),
                         path: path, metadata: sourceMetadata)
    }
}
