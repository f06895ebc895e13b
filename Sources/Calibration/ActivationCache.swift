import Foundation
import LlamaModel
import TensorIO

/// `calibrate --cache DIR`: each decoder layer's input hidden states for the run's windows and
/// each layer's statistics, so that a rerun skips the layers already done and `--from-cache`
/// recomputes statistics (with other settings, say `--gram`) without a forward pass through
/// earlier layers.
///
/// Files, all tied to the model fingerprint, the windows (sha256, range, batching) by metadata:
/// - `layer-L.input.st.zst`: a U8 tensor `hidden` [planes, rows·C]: the states as F32 (lossless,
///   the default) or BF16 (half the disk; statistics recomputed from it are those of BF16-rounded
///   inputs), byte-shuffled (plane b holds byte b of every element, which zstd compresses far
///   better than interleaved bytes).
/// - `layer-L.stats.st`: that layer's statistics tensors, and the statistics settings.
public struct ActivationCache {
    public let directory: URL
    public let element: DType
    let key: [String: String]

    /// `variant`: what else the cached inputs depend on — "one-pass" (the dense model's states), or
    /// the recipe of a sequential run (the states of the layers it pruned).
    public init(directory: String, element: DType, fingerprint: String, windows: CalibrationWindows,
                range: Range<Int>, batchWindows: Int, variant: String = "one-pass") throws {
        guard element == .F32 || element == .BF16 else {
            throw CalibrationError("--cache-dtype must be f32 or bf16", kind: .usage)
        }
        self.directory = URL(fileURLWithPath: directory)
        self.element = element
        key = ["fingerprint": fingerprint, "windows_sha256": windows.sha256,
               "window_range": "\(range.lowerBound)-\(range.upperBound)", "batch_windows": "\(batchWindows)",
               "seqlen": "\(windows.length)", "variant": variant]
        do {
            try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        } catch {
            throw CalibrationError("\(directory): cannot create the cache folder: \(error.localizedDescription)", kind: .io)
        }
    }

    func inputPath(_ l: Int) -> String { directory.appendingPathComponent("layer-\(l).input.st.zst").path }
    func statsPath(_ l: Int) -> String { directory.appendingPathComponent("layer-\(l).stats.st").path }

    private func matches(_ file: TensorFile) -> Bool {
        key.allSatisfy { file.metadata[$0.key] == $0.value }
    }

    /// Refuses a folder holding another run's files (for a sequential run, whose cached states
    /// depend on its recipe: reusing or overwriting another's would be silently wrong or lossy),
    /// naming what differs.
    public func refuseOthers(layers L: Int) throws {
        let names = ["fingerprint": "another model", "windows_sha256": "other windows", "window_range": "another window range",
                     "batch_windows": "another batching", "seqlen": "another window length",
                     "variant": "another pruning recipe (or a one-pass run)"]
        for l in 0..<L {
            for path in [inputPath(l), statsPath(l)] where FileManager.default.fileExists(atPath: path) {
                let file = try TensorStreamReader(path: path)  // the header only
                if let differing = key.keys.sorted().first(where: { file.metadata[$0] != key[$0] }) {
                    throw CalibrationError("\(path): the cache holds \(names[differing] ?? differing)'s states (\(differing) differs); give another --cache folder or remove this one", kind: .usage)
                }
            }
        }
    }

    /// The cached input of layer l, if there is one for these windows (any element type).
    public func input(_ l: Int, count: Int) throws -> [Float]? {
        guard FileManager.default.fileExists(atPath: inputPath(l)) else { return nil }
        let file = try TensorFile(path: inputPath(l))
        guard matches(file), let e = file.header.entry("hidden"), e.dtype == .U8,
              let element = DType(rawValue: file.metadata["element"] ?? ""), element == .F32 || element == .BF16,
              e.shape == [element.size, count]
        else { return nil }
        let planes = element.size
        var out = [Float](repeating: 0, count: count)
        try file.withBytes("hidden") { raw in
            var packed = [UInt8](repeating: 0, count: count * planes)
            for p in 0..<planes {
                let plane = raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + p * count
                for i in 0..<count { packed[i * planes + p] = plane[i] }
            }
            try packed.withUnsafeBytes { src in
                try out.withUnsafeMutableBufferPointer { try convertToFloat(src, dtype: element, into: $0) }
            }
        }
        return out
    }

    public func storeInput(_ l: Int, _ x: UnsafePointer<Float>, count: Int) throws {
        let planes = element.size
        var packed = [UInt8](repeating: 0, count: count * planes)
        packed.withUnsafeMutableBytes {
            encodeFloats(UnsafeBufferPointer(start: x, count: count), dtype: element, into: $0)
        }
        var shuffled = [UInt8](repeating: 0, count: count * planes)
        for i in 0..<count {
            for p in 0..<planes { shuffled[p * count + i] = packed[i * planes + p] }
        }
        var meta = key
        meta["element"] = element.rawValue
        meta["layer"] = "\(l)"
        try shuffled.withUnsafeBytes { bytes in
            let writer = try TensorFileWriter(
                path: inputPath(l), entries: [TensorEntry(name: "hidden", dtype: .U8, shape: [planes, count])],
                metadata: meta, level: 1)
            try writer.write("hidden", bytes: bytes)
            try writer.finish()
        }
    }

    /// The cached statistics of layer l, if computed with these settings.
    public func statistics(_ l: Int, settings: String) throws -> TensorFile? {
        guard FileManager.default.fileExists(atPath: statsPath(l)) else { return nil }
        let file = try TensorFile(path: statsPath(l))
        return matches(file) && file.metadata["settings"] == settings ? file : nil
    }

    func statisticsWriter(_ l: Int, entries: [TensorEntry], settings: String) throws -> TensorFileWriter {
        var meta = key
        meta["settings"] = settings
        meta["layer"] = "\(l)"
        return try TensorFileWriter(path: statsPath(l), entries: entries, metadata: meta, compress: false)
    }
}
