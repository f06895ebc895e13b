import Foundation
import LlamaModel
import TensorIO

/// A model's decoder layers with adapters merged into their weights (W + s·B·A), in memory.
public struct MergedModel {
    public var layers: [LayerWeights]

    public init(model: Model, adapters: LoRAAdapters) throws {
        layers = try (0..<model.config.numLayers).map { l in
            var w = try model.layer(l)
            adapters.merge(into: &w, layer: l)
            return w
        }
    }
}

extension LoRAAdapters {
    /// sha256 of the parameters (float32 little-endian).
    public var digest: String {
        SHA256.hexDigest(UnsafeRawBufferPointer(start: parameters, count: count * MemoryLayout<Float>.size))
    }

    /// Whether any adapter of layer l changes its projection (some B entry is not zero).
    public func changes(layer l: Int, _ p: Projection) -> Bool {
        guard let a = adapter(layer: l, p) else { return false }
        return (0..<(a.outFeatures * a.rank)).contains { parameters[a.bOffset + $0] != 0 }
    }
}

extension Model {
    /// Writes this model with `adapters` merged into its weights: an adapted projection whose
    /// adapter changes it is written as F32 W + s·B·A; every other tensor as it is (so that
    /// adapters that change nothing — rank 0, zero steps — give the same tensors, bit for bit).
    public func writeMerged(_ adapters: LoRAAdapters, to path: String, metadata: [String: String],
                            progress: ((Int, Int) -> Void)? = nil) throws {
        var meta = metadata
        var merged: [String: (Int, Projection)] = [:]
        for a in adapters.adapters where adapters.changes(layer: a.layer, a.projection) {
            merged[TensorNames.weight(a.layer, a.projection)] = (a.layer, a.projection)
        }
        let names = tensorNames
        // The same model when nothing changes it; otherwise one derived from it and the adapters.
        meta["fingerprint"] = merged.isEmpty ? try fingerprint()
            : Fingerprint.derived(from: try fingerprint(), stage: "finetune", inputs: [adapters.digest])
        let writer = try ModelWriter(
            path: path, config: config, tensors: names.map { ($0, shape($0) ?? []) },
            dtype: { merged[$0] != nil ? .F32 : self.storageType($0) }, tokenizerJSON: tokenizerJSON, metadata: meta)
        try writer.complete {
            var current: (layer: Int, weights: LayerWeights)?  // the layer being written, merged
            for (i, name) in names.enumerated() {
                if let (l, p) = merged[name] {
                    if current?.layer != l {
                        var w = try layer(l)
                        adapters.merge(into: &w, layer: l)
                        current = (l, w)
                    }
                    try writer.write(name, current!.weights.linear(p).weight)
                } else {
                    try writer.write(name, try floats(name))
                }
                progress?(i + 1, names.count)
            }
        }
    }
}
