import Foundation
import TensorIO

/// Merging statistics files of disjoint shards of the same windows (`calibrate merge`).
public enum StatisticsMerge {
    /// Metadata that must agree between shards.
    static let sameKeys = ["format", "fingerprint", "samples", "seqlen", "seed", "data_sha256", "windows_sha256",
                           "windows_mode", "gram", "gram_dtype", "shard_count", "batch_windows", "gradients", "grad_dtype",
                           "gradient_loss", "layer_inputs"]

    /// Adds the sums of `paths` (shard files) and writes the result: a complete statistics file
    /// when the shards cover every window (per-window sums become FLAP's fluctuation); with
    /// `partial`, a subset may be merged into a shard file of their union (else a missing shard is
    /// refused, naming it). Sums are added in shard order, in float64 (a Gram stored as F32 is
    /// added in float64 and rounded once). Returns the shards merged and the shard count.
    @discardableResult
    public static func merge(_ paths: [String], output: String, metadata extra: [String: String],
                             partial: Bool = false) throws -> (shards: [Int], count: Int) {
        guard paths.count >= 1 else { throw CalibrationError("merge needs at least one statistics file", kind: .usage) }
        var files: [(path: String, file: TensorFile, shards: [Int])] = []
        for path in paths {
            let file = try TensorFile(path: path)
            let m = file.metadata
            if let problem = formatMismatch(m, expected: StatNames.format, path: path, noun: "statistics") {
                throw StatisticsFileError(problem)
            }
            guard let text = m["shards"], m["shard_count"] != nil else {
                throw CalibrationError("\(path): a complete statistics file, not a shard (nothing to merge it with)")
            }
            let shards = text.split(separator: ",").compactMap { Int($0) }
            guard !shards.isEmpty, shards.count == text.split(separator: ",").count else {
                throw CalibrationError("\(path): metadata shards '\(text)' is not a list of shard indices")
            }
            files.append((path, file, shards))
        }
        files.sort { $0.shards.min()! < $1.shards.min()! }
        let first = files[0]
        for f in files.dropFirst() {
            for key in sameKeys where f.file.metadata[key] != first.file.metadata[key] {
                throw CalibrationError("\(f.path) and \(first.path) differ in \(key) (\(f.file.metadata[key] ?? "missing") vs \(first.file.metadata[key] ?? "missing")): not shards of the same run")
            }
        }
        var seen = Set<Int>()
        for f in files {
            for s in f.shards where !seen.insert(s).inserted {
                throw CalibrationError("\(f.path): shard \(s) is given twice")
            }
        }
        guard let count = Int(first.file.metadata["shard_count"] ?? ""), count >= 1,
              let T = Int(first.file.metadata["seqlen"] ?? ""), T >= 1,
              let samples = Int(first.file.metadata["samples"] ?? ""),
              let batchWindows = Int(first.file.metadata["batch_windows"] ?? ""), batchWindows >= 1
        else { throw CalibrationError("\(first.path): metadata shard_count, seqlen, samples or batch_windows is missing or invalid") }
        for f in files {
            for s in f.shards where s < 0 || s >= count {
                throw CalibrationError("\(f.path): shard \(s) is not one of the \(count) shards (0…\(count - 1))")
            }
        }
        let complete = seen.count == count
        if !complete && !partial {
            let missing = (0..<count).filter { !seen.contains($0) }
            throw CalibrationError("shard\(missing.count == 1 ? "" : "s") \(missing.map(String.init).joined(separator: ", ")) of \(count) "
                                   + "\(missing.count == 1 ? "is" : "are") missing (--partial merges a subset into a shard file)")
        }
        let windowCounts = files.map { f in
            f.shards.map { Calibrator.shardRange($0, of: count, windows: samples, batchWindows: batchWindows).count }.reduce(0, +)
        }
        let windows = windowCounts.reduce(0, +)

        // The output's entries: the first file's, window sums resized (or turned into the fluctuation).
        let names = first.file.header.entries.map(\.name)
        for f in files.dropFirst() where f.file.header.entries.map(\.name) != names {
            throw CalibrationError("\(f.path) holds different tensors than \(first.path)")
        }
        var entries: [TensorEntry] = []
        for e in first.file.header.entries {
            if e.name.hasSuffix(".\(PointField.windowSum.rawValue)") || e.name.hasSuffix(".\(PointField.windowSumsq.rawValue)") {
                guard e.shape.count == 2 else { throw CalibrationError("\(first.path): \(e.name) is not [windows, width]") }
                if complete {
                    if e.name.hasSuffix(".\(PointField.windowSum.rawValue)") {
                        let base = String(e.name.dropLast(PointField.windowSum.rawValue.count))
                        entries.append(TensorEntry(name: base + PointField.fluctuation.rawValue, dtype: .F64, shape: [e.shape[1]]))
                    }
                } else {
                    entries.append(TensorEntry(name: e.name, dtype: .F64, shape: [windows, e.shape[1]]))
                }
            } else {
                entries.append(e)
            }
        }
        var meta = first.file.metadata.merging(extra) { $1 }
        meta["windows_in_file"] = "\(windows)"
        meta["source"] = first.file.metadata["source"]
        if complete {
            meta["shards"] = nil
            meta["shard_count"] = nil
        } else {
            meta["shards"] = seen.sorted().map(String.init).joined(separator: ",")
        }
        let writer = try TensorFileWriter(path: output, entries: entries, metadata: meta)
        try writer.complete {
            let byName = Dictionary(uniqueKeysWithValues: first.file.header.entries.map { ($0.name, $0) })
            for e in first.file.header.entries {
                let name = e.name
                for (i, f) in files.enumerated() {
                    guard let other = f.file.header.entry(name), other.dtype == e.dtype else {
                        throw CalibrationError("\(f.path): tensor \(name) differs in type from \(first.path)")
                    }
                    let isWindow = name.hasSuffix(".\(PointField.windowSum.rawValue)") || name.hasSuffix(".\(PointField.windowSumsq.rawValue)")
                    if isWindow {
                        guard other.shape.count == 2, other.shape[0] == windowCounts[i], other.shape[1] == e.shape[1] else {
                            throw CalibrationError("\(f.path): \(name) has shape \(other.shape), expected [\(windowCounts[i]), \(e.shape[1])]")
                        }
                    } else if other.shape != e.shape {
                        throw CalibrationError("\(f.path): \(name) has shape \(other.shape), \(first.path) \(e.shape)")
                    }
                }
                if name.hasSuffix(".\(PointField.windowSumsq.rawValue)") { continue }  // handled with window_sum
                if name.hasSuffix(".\(PointField.windowSum.rawValue)") {
                    let base = String(name.dropLast(PointField.windowSum.rawValue.count))
                    let sqName = base + PointField.windowSumsq.rawValue
                    guard byName[sqName] != nil else { throw CalibrationError("\(first.path): \(name) without \(sqName)") }
                    // Each file holds its shards' windows in ascending shard order; the output
                    // holds every shard's in ascending order.
                    let w = e.shape[1]
                    var slices: [Int: (file: Int, offset: Int, count: Int)] = [:]
                    for (i, f) in files.enumerated() {
                        var offset = 0
                        for shard in f.shards.sorted() {
                            let n = Calibrator.shardRange(shard, of: count, windows: samples, batchWindows: batchWindows).count
                            slices[shard] = (i, offset, n)
                            offset += n
                        }
                    }
                    let sums = try files.map { try $0.file.doubles(name) }
                    let squares = try files.map { try $0.file.doubles(sqName) }
                    var s: [Double] = [], q: [Double] = []
                    for shard in seen.sorted() {
                        let (i, offset, n) = slices[shard]!
                        s += sums[i][offset * w..<(offset + n) * w]
                        q += squares[i][offset * w..<(offset + n) * w]
                    }
                    if complete {
                        let fluc = flapFluctuation(windowSum: s, windowSumsq: q, windows: windows, windowLength: T, width: w)
                        try writer.write(base + PointField.fluctuation.rawValue, doubles: fluc)
                    } else {
                        try writer.write(name, doubles: s)
                        try writer.write(sqName, doubles: q)
                    }
                    continue
                }
                if e.dtype.isInteger {
                    var total = try first.file.integers(name)
                    for f in files.dropFirst() {
                        let v = try f.file.integers(name)
                        for j in total.indices { total[j] += v[j] }
                    }
                    try writer.write(name, integers: total)
                } else {
                    var total = try first.file.doubles(name)
                    for f in files.dropFirst() {
                        let v = try f.file.doubles(name)
                        for j in total.indices { total[j] += v[j] }
                    }
                    try writer.write(name, doubles: total)
                }
            }
        }
        return (seen.sorted(), count)
    }
}
