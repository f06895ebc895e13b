import Foundation
@testable import LlamaModel
import TensorIO
import TestSupport
import XCTest

final class ImportExportTests: XCTestCase {
    /// A model file written by convert reads back with the same configuration, tensors and
    /// fingerprint; a Hugging Face export reads back to the same logits.
    func testModelFileAndHuggingFaceRoundTrips() throws {
        let source = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let dir = try Fixtures.temporaryDirectory()
        let file = dir.appendingPathComponent("m.st.zst").path
        try source.write(to: file, metadata: ["producer": "test"])
        XCTAssertTrue(try isZstdFile(path: file))
        let copy = try Model.open(file)
        XCTAssertEqual(copy.config, source.config)
        XCTAssertEqual(try copy.fingerprint(), try source.fingerprint())
        XCTAssertEqual(copy.tensorNames, source.tensorNames)
        for name in source.tensorNames { XCTAssertEqual(try copy.floats(name), try source.floats(name), name) }

        let hf = dir.appendingPathComponent("hf").path
        try source.exportHuggingFace(to: hf)
        let back = try Model.open(hf)
        let tokens: [Int32] = [3, 14, 15, 92, 65, 35, 89, 79]
        XCTAssertEqual(try Runner(model: back, maxPositions: 8).logits(tokens),
                       try Runner(model: source, maxPositions: 8).logits(tokens))
    }

    /// An imported model's fingerprint hashes its large tensors a block of rows at a time (the
    /// same bytes as the whole tensor), from a Hugging Face directory and from a model file.
    func testFingerprintByRowBlocksEqualsTheWholeTensors() throws {
        let source = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let hf = try Fixtures.temporaryDirectory().appendingPathComponent("hf").path
        try source.exportHuggingFace(to: hf)
        for model in [try Model.open(hf), source] {
            let whole = try Fingerprint.compute(model: model, largeTensor: .max)
            XCTAssertEqual(try Fingerprint.compute(model: model, largeTensor: 100), whole)
            XCTAssertEqual(try Fingerprint.compute(model: model, largeTensor: 1), whole)
        }
    }

    /// A Hugging Face export that reads and writes large tensors a block of rows at a time writes the same
    /// model.safetensors as one that holds each tensor whole.
    func testHuggingFaceExportByRowBlocksWritesTheSameFile() throws {
        let dir = try Fixtures.temporaryDirectory()
        let source = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        func export(_ name: String, largeTensor: Int) throws -> Data {
            let hf = dir.appendingPathComponent(name).path
            try source.exportHuggingFace(to: hf, largeTensor: largeTensor)
            return try Data(contentsOf: URL(fileURLWithPath: hf + "/model.safetensors"))
        }
        XCTAssertTrue(source.readsRowsAlone)
        XCTAssertEqual(try export("blocks", largeTensor: 40), try export("whole", largeTensor: .max))
    }

    /// A tensor copied a block of rows at a time writes the same file as copied whole, and a
    /// non-finite value is named by its element in the whole tensor.
    func testCopyByRowBlocksWritesTheSameFile() throws {
        let dir = try Fixtures.temporaryDirectory()
        let source = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        func copy(_ name: String, largeTensor: Int) throws -> Data {
            let path = dir.appendingPathComponent(name).path
            let names = source.tensorNames
            let writer = try ModelWriter(path: path, config: source.config, tensors: names.map { ($0, source.shape($0)!) },
                                         dtype: { source.storageType($0) }, tokenizerJSON: nil, metadata: [:])
            for name in names { try source.copy(name, to: writer, checkFinite: true, largeTensor: largeTensor) }
            try writer.finish()
            return try Data(contentsOf: URL(fileURLWithPath: path))
        }
        XCTAssertEqual(try copy("blocks.st", largeTensor: 40), try copy("whole.st", largeTensor: .max))

        var bad = source.tensorNames.map { ($0, try! source.floats($0)) }
        bad[0].1[bad[0].1.count - 2] = .nan
        let path = dir.appendingPathComponent("nan.st").path
        let writer = try ModelWriter(path: path, config: source.config, tensors: bad.map { ($0.0, source.shape($0.0)!) },
                                     dtype: { _ in .F32 }, tokenizerJSON: nil, metadata: [:])
        for (name, values) in bad { try writer.write(name, values) }
        try writer.finish()
        let nan = try Model.open(path)
        let out = try ModelWriter(path: dir.appendingPathComponent("out.st").path, config: source.config,
                                  tensors: bad.map { ($0.0, source.shape($0.0)!) }, dtype: { _ in .F32 },
                                  tokenizerJSON: nil, metadata: [:])
        XCTAssertThrowsError(try nan.copy(bad[0].0, to: out, checkFinite: true, largeTensor: 40)) {
            XCTAssertEqual("\($0)", "\(path): \(bad[0].0) holds nan at element \(bad[0].1.count - 2)")
        }
        out.abort()
    }

    func testNonUniformModelRefusesHuggingFaceExport() throws {
        let model = try Model.open(Fixtures.url("model/tiny_nonuniform.safetensors").path)
        XCTAssertThrowsError(try model.exportHuggingFace(to: Fixtures.temporaryDirectory().path)) {
            XCTAssertTrue("\($0)".contains("transformers cannot hold per-layer widths"), "\($0)")
        }
    }

    /// Every tensor transformers loads from the SmolLM2 GGUF (q/k rows un-permuted) is equal, bit
    /// for bit, to what PruneKit imports (scripts/reference/model_reference.py state).
    func testSmolLM2ImportEqualsTransformers() throws {
        struct State: Decodable {
            struct Row: Decodable { var shape: [Int]; var sha256: String }
            var tensors: [String: Row]
        }
        let state = try JSONDecoder().decode(
            State.self, from: Data(contentsOf: Fixtures.url("model/smollm2_state.json")))
        let model = try Model.open(try Fixtures.requireModel())
        XCTAssertEqual(model.config.headCounts, Array(repeating: 9, count: 30))
        XCTAssertEqual(model.config.kvHeadCounts, Array(repeating: 3, count: 30))
        var expected = state.tensors
        if model.config.tieWordEmbeddings { expected.removeValue(forKey: "lm_head.weight") }
        XCTAssertEqual(Set(model.tensorNames), Set(expected.keys))
        for name in model.tensorNames {
            guard let row = expected[name] else { continue }
            XCTAssertEqual(model.shape(name), row.shape, name)
            let digest = try model.floats(name).withUnsafeBytes { SHA256.hexDigest($0) }
            XCTAssertEqual(digest, row.sha256, "\(name) differs from transformers' tensor")
        }
    }
}
