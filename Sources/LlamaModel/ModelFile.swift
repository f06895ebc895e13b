import Foundation
import TensorIO

/// A PruneKit model file on disk (random access, mmapped or decompressed once).
final class ModelFileStore: TensorStore {
    let file: TensorFile
    let path: String
    init(file: TensorFile, path: String) {
        self.file = file
        self.path = path
    }
    var names: [String] { file.header.entries.map(\.name) }
    func shape(_ name: String) -> [Int]? { file.header.entry(name)?.shape }
    func storageType(_ name: String) -> DType { file.header.entry(name)?.dtype ?? .F32 }
    func floats(_ name: String) throws -> [Float] { try file.floats(name) }
    func rows(_ name: String, _ ids: [Int]) throws -> [Float] { try file.floatRows(name, ids) }
    var readsRows: Bool { true }
}

/// A PruneKit model file read as a stream (standard input): tensors only in file order.
final class ModelStreamStore: TensorStore {
    let reader: TensorStreamReader
    let path: String
    private var pending: [String: [Float]] = [:]
    init(reader: TensorStreamReader, path: String) {
        self.reader = reader
        self.path = path
    }
    var names: [String] { reader.header.entries.map(\.name) }
    func shape(_ name: String) -> [Int]? { reader.header.entry(name)?.shape }
    func storageType(_ name: String) -> DType { reader.header.entry(name)?.dtype ?? .F32 }

    func floats(_ name: String) throws -> [Float] {
        if let values = pending.removeValue(forKey: name) { return values }
        // Read forward to the tensor; anything passed over is kept until asked for.
        while let (entry, bytes) = try reader.next() {
            var values = [Float](repeating: 0, count: entry.elementCount)
            try bytes.withUnsafeBytes { raw in
                try values.withUnsafeMutableBufferPointer {
                    try convertToFloat(raw, dtype: entry.dtype, into: $0)
                }
            }
            if entry.name == name {
                // The last tensor: read on to the end now, so that a stream missing its end (a
                // truncated zstd frame, a bad checksum) fails here rather than pass unnoticed.
                if entry.name == reader.header.entries.last?.name { _ = try reader.next() }
                return values
            }
            pending[entry.name] = values
        }
        throw TensorIOError.badData(
            "\(path): tensor '\(name)' was asked for after the stream passed it")
    }
}

extension Model {
    static func openModelFile(_ path: String, stream: Bool = false) throws -> Model {
        let metadata: [String: String]
        let store: TensorStore
        if path == "-" || stream {
            let reader = try TensorStreamReader(path: path)
            metadata = reader.header.metadata
            store = ModelStreamStore(reader: reader, path: shownName(path))
        } else {
            let file = try TensorFile(path: path)
            metadata = file.metadata
            store = ModelFileStore(file: file, path: path)
        }
        let shown = shownName(path)
        if let problem = formatMismatch(metadata, expected: ModelFileFormat.name, path: shown, noun: "PruneKit model") {
            throw TensorIOError.badData(problem)
        }
        guard let configText = metadata["config"] else {
            throw TensorIOError.badData("\(shown): model file has no config in its metadata")
        }
        let config: LlamaConfig
        do { config = try LlamaConfig.fromJSON(configText) } catch let e as ConfigError {
            throw TensorIOError.badData("\(shown): \(e.message)")
        }
        return try Model(config: config, tokenizerJSON: metadata["tokenizer"], store: store,
                         path: shown, metadata: metadata)
    }
}

public enum ModelFileFormat {
    public static let name = "prunekit-model"
}
