import Foundation
import Kernels
import LlamaModel
import TensorIO

public enum Slicing {
    /// Writes the physically smaller model `plan` leaves of `model`, layer by layer (one layer's
    /// weights in memory): the plan must have been made for this model and fit it. Returns the
    /// parameter counts before and after.
    @discardableResult
    public static func write(_ model: Model, plan: PlanFile, to output: String, weightType: WeightType = .auto,
                             metadata extra: [String: String], progress: (Int) -> Void = { _ in }) throws
        -> (before: Int, after: Int)
    {
        let fingerprint = try model.fingerprint()
        try plan.requireModel(fingerprint: fingerprint)
        let c = model.config
        try plan.check(against: c)
        let sliced = config(c, plan: plan)
        var tensors: [(name: String, shape: [Int])] = [(TensorNames.embedding, [c.vocabSize, c.hiddenSize])]
        for l in 0..<c.numLayers {
            tensors.append((TensorNames.inputNorm(l), [c.hiddenSize]))
            for p in Projection.allCases {
                if p == .gate { tensors.append((TensorNames.postAttentionNorm(l), [c.hiddenSize])) }
                let (rows, cols) = TensorNames.projectionShape(p, config: sliced, layer: l)
                tensors.append((TensorNames.weight(l, p), [rows, cols]))
                if model.hasBias(l, p) { tensors.append((TensorNames.bias(l, p), [rows])) }
            }
        }
        tensors.append((TensorNames.finalNorm, [c.hiddenSize]))
        if !c.tieWordEmbeddings { tensors.append((TensorNames.head, [c.vocabSize, c.hiddenSize])) }
        var meta = extra
        meta["fingerprint"] = Fingerprint.derived(from: fingerprint, stage: "slice", inputs: [plan.digest])
        meta["parent_fingerprint"] = fingerprint
        meta["plan_digest"] = plan.digest
        let writer = try ModelWriter(path: output, config: sliced, tensors: tensors,
                                     dtype: { weightType.dtype(source: model.storageType($0)) },
                                     tokenizerJSON: model.tokenizerJSON, metadata: meta)
        var after = 0
        try writer.complete {
            func put(_ name: String, _ values: [Float]) throws {
                after += values.count
                try writer.write(name, values)
            }
            after += try model.copy(TensorNames.embedding, to: writer)
            for l in 0..<c.numLayers {
                for (name, values) in layer(l, weights: try model.layer(l), plan: plan.layers[l], config: c) {
                    try put(name, values)
                }
                progress(l + 1)
            }
            try put(TensorNames.finalNorm, try model.finalNorm())
            if !c.tieWordEmbeddings { after += try model.copy(TensorNames.head, to: writer) }
        }
        return (model.totalParameters, after)
    }

    /// The configuration of the sliced model.
    public static func config(_ c: LlamaConfig, plan: PlanFile) -> LlamaConfig {
        var out = c
        out.headCounts = plan.layers.map(\.keptHeads.count)
        out.kvHeadCounts = plan.layers.map(\.keptKVHeads.count)
        out.ffnWidths = plan.layers.map(\.keptChannels.count)
        return out.withValueWidths(plan.layers.enumerated().map { l, p in p.keptValueWidths(c.valueWidths(layer: l)) })
    }

    /// The o_proj columns a plan keeps in layer l: for every kept query head, in order, the columns
    /// of the value rows kept in its KV head.
    public static func keptAttentionColumns(_ p: LayerPlan, config c: LlamaConfig, layer l: Int) -> [Int] {
        guard c.kvHeadCounts[l] > 0 else { return [] }
        let layout = c.valueLayout(layer: l)
        let rows = p.keptValueRows(layout.widths)
        return p.keptHeads.flatMap { h -> [Int] in
            let group = layout.rows(ofGroup: h / layout.headsPerGroup), first = layout.columns(ofHead: h).lowerBound
            return rows.filter(group.contains).map { first + $0 - group.lowerBound }
        }
    }

    /// Rows `rows` (each of `width` values) of a row-major matrix.
    static func rows(_ w: [Float], width: Int, _ keep: [Int]) -> [Float] {
        var out: [Float] = []
        out.reserveCapacity(keep.count * width)
        for r in keep { out += w[r * width..<(r + 1) * width] }
        return out
    }

    /// Columns `keep` of a row-major [rows, width] matrix.
    static func columns(_ w: [Float], width: Int, _ keep: [Int]) -> [Float] {
        let n = width == 0 ? 0 : w.count / width
        var out = [Float](repeating: 0, count: n * keep.count)
        for i in 0..<n {
            for (j, c) in keep.enumerated() { out[i * keep.count + j] = w[i * width + c] }
        }
        return out
    }

    /// Expands head indices into their D rows.
    static func dims(_ heads: [Int], _ D: Int) -> [Int] { heads.flatMap { h in (h * D)..<((h + 1) * D) } }

    /// Layer l's weights with the plan's rows and columns removed.
    public static func slicedWeights(_ l: Int, weights w: LayerWeights, plan p: LayerPlan, config c: LlamaConfig) -> LayerWeights {
        let D = c.headDim
        let qDims = dims(p.keptHeads, D), kDims = dims(p.keptKVHeads, D), ch = p.keptChannels
        let vRows = p.keptValueRows(c.valueWidths(layer: l))
        let oColumns = keptAttentionColumns(p, config: c, layer: l)
        func cut(_ lin: Linear, rows keep: [Int]?, columns cols: [Int]?) -> Linear {
            var weight = lin.weight
            if let keep { weight = rows(weight, width: lin.inFeatures, keep) }
            if let cols { weight = columns(weight, width: lin.inFeatures, cols) }
            let bias = lin.bias.map { b in keep.map { $0.map { b[$0] } } ?? b }
            return Linear(weight: weight, bias: bias, outFeatures: keep?.count ?? lin.outFeatures,
                          inFeatures: cols?.count ?? lin.inFeatures)
        }
        return LayerWeights(inputNorm: w.inputNorm, q: cut(w.q, rows: qDims, columns: nil), k: cut(w.k, rows: kDims, columns: nil),
                            v: cut(w.v, rows: vRows, columns: nil), o: cut(w.o, rows: nil, columns: oColumns),
                            postAttentionNorm: w.postAttentionNorm, gate: cut(w.gate, rows: ch, columns: nil),
                            up: cut(w.up, rows: ch, columns: nil), down: cut(w.down, rows: nil, columns: ch))
    }

    /// The sliced tensors of layer l, by name, in the model's canonical layer order.
    public static func layer(_ l: Int, weights w: LayerWeights, plan p: LayerPlan, config c: LlamaConfig)
        -> [(String, [Float])]
    {
        let s = slicedWeights(l, weights: w, plan: p, config: c)
        var out: [(String, [Float])] = [(TensorNames.inputNorm(l), s.inputNorm)]
        for proj in Projection.allCases {
            if proj == .gate { out.append((TensorNames.postAttentionNorm(l), s.postAttentionNorm)) }
            let lin = s.linear(proj)
            out.append((TensorNames.weight(l, proj), lin.weight))
            if let b = lin.bias { out.append((TensorNames.bias(l, proj), b)) }
        }
        return out
    }
}
