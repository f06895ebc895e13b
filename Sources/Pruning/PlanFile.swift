import Foundation
import Kernels
import LlamaModel
import TensorIO

// The plan file (docs/DESIGN.md "The plan"): per layer the kept heads, KV heads, MLP channels and,
// for V/O plans, value rows. `allocate` writes it; `slice` and `restore` read it. This type owns
// the file's reading, writing, checks and error.

public enum PlanNames {
    public static func heads(_ l: Int) -> String { "model.layers.\(l).self_attn.kept_heads" }
    public static func kvHeads(_ l: Int) -> String { "model.layers.\(l).self_attn.kept_kv_heads" }
    public static func channels(_ l: Int) -> String { "model.layers.\(l).mlp.kept_channels" }
    /// Present only for V/O pruning: the kept v_proj rows.
    public static func valueDims(_ l: Int) -> String { "model.layers.\(l).self_attn.kept_value_dims" }
    public static let format = "prunekit-plan"
}

/// A plan file that is not one, or a plan that does not fit the model it is applied to.
public struct PlanFileError: BadDataError {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// A plan: kept heads, KV heads and channels per layer, with the metadata of the run that made it.
public struct PlanFile {
    public var layers: [LayerPlan]
    public var metadata: [String: String]
    /// Where it was read from ("plan" for one made in memory).
    public var path = "plan"

    public init(path: String) throws {
        let file = try TensorFile(path: path)
        if let problem = formatMismatch(file.metadata, expected: PlanNames.format, path: path, noun: "plan") {
            throw PlanFileError(problem)
        }
        self.path = path
        metadata = file.metadata
        layers = []
        var l = 0
        while file.header.entry(PlanNames.heads(l)) != nil {
            func indices(_ name: String) throws -> [Int] {
                guard file.header.entry(name) != nil else { throw PlanFileError("\(path): \(name) is missing") }
                return try file.integers(name)
            }
            let valueDims = file.header.entry(PlanNames.valueDims(l)) == nil ? nil : try indices(PlanNames.valueDims(l))
            layers.append(LayerPlan(keptHeads: try indices(PlanNames.heads(l)), keptKVHeads: try indices(PlanNames.kvHeads(l)),
                                    keptChannels: try indices(PlanNames.channels(l)), keptValueDims: valueDims))
            l += 1
        }
    }

    public init(layers: [LayerPlan], metadata: [String: String] = [:]) {
        self.layers = layers
        self.metadata = metadata
    }

    /// Writes the plan (metadata `format` is set here).
    public func write(to output: String) throws {
        var entries: [TensorEntry] = []
        for (l, p) in layers.enumerated() {
            entries.append(TensorEntry(name: PlanNames.heads(l), dtype: .I32, shape: [p.keptHeads.count]))
            entries.append(TensorEntry(name: PlanNames.kvHeads(l), dtype: .I32, shape: [p.keptKVHeads.count]))
            entries.append(TensorEntry(name: PlanNames.channels(l), dtype: .I32, shape: [p.keptChannels.count]))
            if let rows = p.keptValueDims {
                entries.append(TensorEntry(name: PlanNames.valueDims(l), dtype: .I32, shape: [rows.count]))
            }
        }
        var meta = metadata
        meta["format"] = PlanNames.format
        let writer = try TensorFileWriter(path: output, entries: entries, metadata: meta)
        try writer.complete {
            for (l, p) in layers.enumerated() {
                try writer.write(PlanNames.heads(l), integers: p.keptHeads)
                try writer.write(PlanNames.kvHeads(l), integers: p.keptKVHeads)
                try writer.write(PlanNames.channels(l), integers: p.keptChannels)
                if let rows = p.keptValueDims { try writer.write(PlanNames.valueDims(l), integers: rows) }
            }
        }
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

    /// The plan was made from statistics of the model with this fingerprint.
    public func requireModel(fingerprint: String) throws {
        guard metadata["fingerprint"] == fingerprint else {
            throw PlanFileError("\(path): a plan for another model (fingerprint \(metadata["fingerprint"]?.prefix(12) ?? "none"), the model's \(fingerprint.prefix(12)))")
        }
    }

    /// The plan fits the configuration: sorted unique indices in range; every kept query head in
    /// a kept group and the same number of query heads in every kept group; kept value rows only
    /// of kept groups.
    public func check(against c: LlamaConfig) throws {
        guard layers.count == c.numLayers else {
            throw PlanFileError("\(path): a plan for \(layers.count) layers, the model has \(c.numLayers)")
        }
        for (l, p) in layers.enumerated() {
            let H = c.headCounts[l], Hkv = c.kvHeadCounts[l], F = c.ffnWidths[l]
            func valid(_ x: [Int], _ n: Int) -> Bool { zip(x, x.dropFirst()).allSatisfy { $0 < $1 } && x.allSatisfy { $0 >= 0 && $0 < n } }
            guard valid(p.keptHeads, H), valid(p.keptKVHeads, max(Hkv, 0)), valid(p.keptChannels, F) else {
                throw PlanFileError("\(path): layer \(l): kept indices are not sorted, unique and within the layer's \(H) heads, \(Hkv) KV heads, \(F) channels")
            }
            if H > 0 {
                let g = H / Hkv
                let per = p.keptKVHeads.map { k in p.keptHeads.filter { $0 / g == k }.count }
                guard p.keptHeads.allSatisfy({ p.keptKVHeads.contains($0 / g) }), Set(per).count <= 1,
                      per.first.map({ $0 > 0 }) ?? p.keptHeads.isEmpty
                else {
                    throw PlanFileError("\(path): layer \(l): kept heads \(p.keptHeads) do not give every kept KV head \(p.keptKVHeads) the same number of query heads")
                }
            }
            if let rows = p.keptValueDims {
                let layout = c.valueLayout(layer: l)
                let allowed = Set(p.keptKVHeads.flatMap { layout.rows(ofGroup: $0) })
                guard valid(rows, layout.rowCount), rows.allSatisfy(allowed.contains) else {
                    throw PlanFileError("\(path): layer \(l): kept value rows are not sorted, unique and within the kept KV heads' \(allowed.count) value rows")
                }
            }
        }
    }
}
