import Foundation
import Kernels
import LlamaModel
import TensorIO

/// A plan read from its file: kept heads, KV heads and channels per layer, checked against a model.
public struct PlanFile {
    public var layers: [LayerPlan]
    public var metadata: [String: String]

    public init(path: String) throws {
        let file = try TensorFile(path: path)
        guard file.metadata["format"] == PlanNames.format else {
            throw SliceError("\(path): not a plan file (metadata format is \(file.metadata["format"].map { "'\($0)'" } ?? "missing"))")
        }
        metadata = file.metadata
        layers = []
        var l = 0
        while file.header.entry(PlanNames.heads(l)) != nil {
            let valueDims = file.header.entry(PlanNames.valueDims(l)) == nil ? nil : try file.integers(PlanNames.valueDims(l))
            layers.append(LayerPlan(keptHeads: try file.integers(PlanNames.heads(l)),
                                    keptKVHeads: try file.integers(PlanNames.kvHeads(l)),
                                    keptChannels: try file.integers(PlanNames.channels(l)),
                                    keptValueDims: valueDims))
            l += 1
        }
    }

    public init(layers: [LayerPlan], metadata: [String: String] = [:]) {
        self.layers = layers
        self.metadata = metadata
    }

    /// A digest of the kept indices (the plan's part of a sliced model's lineage fingerprint).
    public var digest: String {
        var text = "prunekit-plan-v1"
        for (l, p) in layers.enumerated() {
            text += "\n\(l):\(p.keptHeads.map(String.init).joined(separator: ","));"
                + "\(p.keptKVHeads.map(String.init).joined(separator: ","));"
                + p.keptChannels.map(String.init).joined(separator: ",")
            // Only V/O plans carry value rows (so other plans keep their digests).
            if let rows = p.keptValueDims { text += ";v" + rows.map(String.init).joined(separator: ",") }
        }
        var hash = SHA256()
        text.withUTF8 { hash.update(UnsafeRawBufferPointer($0)) }
        return SHA256.hex(hash.finalize())
    }

    /// The plan fits the configuration: sorted unique indices in range; every kept query head in
    /// a kept group and the same number of query heads in every kept group; kept value rows only
    /// of kept groups.
    public func check(against c: LlamaConfig, name: String) throws {
        guard layers.count == c.numLayers else {
            throw SliceError("\(name): a plan for \(layers.count) layers, the model has \(c.numLayers)")
        }
        for (l, p) in layers.enumerated() {
            let H = c.headCounts[l], Hkv = c.kvHeadCounts[l], F = c.ffnWidths[l]
            func valid(_ x: [Int], _ n: Int) -> Bool { zip(x, x.dropFirst()).allSatisfy { $0 < $1 } && x.allSatisfy { $0 >= 0 && $0 < n } }
            guard valid(p.keptHeads, H), valid(p.keptKVHeads, max(Hkv, 0)), valid(p.keptChannels, F) else {
                throw SliceError("\(name): layer \(l): kept indices are not sorted, unique and within the layer's \(H) heads, \(Hkv) KV heads, \(F) channels")
            }
            if H > 0 {
                let g = H / Hkv
                let per = p.keptKVHeads.map { k in p.keptHeads.filter { $0 / g == k }.count }
                guard p.keptHeads.allSatisfy({ p.keptKVHeads.contains($0 / g) }), Set(per).count <= 1,
                      per.first.map({ $0 > 0 }) ?? p.keptHeads.isEmpty
                else {
                    throw SliceError("\(name): layer \(l): kept heads \(p.keptHeads) do not give every kept KV head \(p.keptKVHeads) the same number of query heads")
                }
            }
            if let rows = p.keptValueDims {
                let layout = c.valueLayout(layer: l)
                let allowed = Set(p.keptKVHeads.flatMap { layout.rows(ofGroup: $0) })
                guard valid(rows, layout.rowCount), rows.allSatisfy(allowed.contains) else {
                    throw SliceError("\(name): layer \(l): kept value rows are not sorted, unique and within the kept KV heads' \(allowed.count) value rows")
                }
            }
        }
    }
}

public struct SliceError: DiagnosedError {
    public var message: String
    public var kind: FailureKind { .badData }
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum Slicing {
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

    /// The sliced tensors of layer l, by name, in the model's canonical layer order.
    public static func layer(_ l: Int, weights w: LayerWeights, plan p: LayerPlan, config c: LlamaConfig)
        -> [(String, [Float])]
    {
        let D = c.headDim
        let qDims = dims(p.keptHeads, D), kDims = dims(p.keptKVHeads, D), ch = p.keptChannels
        let vRows = p.keptValueRows(c.valueWidths(layer: l))
        let oColumns = keptAttentionColumns(p, config: c, layer: l)
        var out: [(String, [Float])] = [(TensorNames.inputNorm(l), w.inputNorm)]
        func add(_ proj: Projection, _ lin: Linear, rows keep: [Int]?, columns cols: [Int]?) {
            var weight = lin.weight
            if let keep { weight = rows(weight, width: lin.inFeatures, keep) }
            if let cols { weight = columns(weight, width: lin.inFeatures, cols) }
            out.append((TensorNames.weight(l, proj), weight))
            if let b = lin.bias { out.append((TensorNames.bias(l, proj), keep.map { $0.map { b[$0] } } ?? b)) }
        }
        add(.q, w.q, rows: qDims, columns: nil)
        add(.k, w.k, rows: kDims, columns: nil)
        add(.v, w.v, rows: vRows, columns: nil)
        add(.o, w.o, rows: nil, columns: oColumns)
        out.append((TensorNames.postAttentionNorm(l), w.postAttentionNorm))
        add(.gate, w.gate, rows: ch, columns: nil)
        add(.up, w.up, rows: ch, columns: nil)
        add(.down, w.down, rows: nil, columns: ch)
        return out
    }
}
