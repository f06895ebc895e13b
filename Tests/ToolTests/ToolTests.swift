import Foundation
import TensorIO
import TestSupport
import XCTest

/// The tools as a user runs them: the built binaries, their output streams and exit codes.
final class ToolTests: XCTestCase {
    func testHelp() throws {
        for tool in ["convert", "evaluate"] {
            let r = try runTool(tool, ["--help"])
            XCTAssertEqual(r.status, 0, tool)
            XCTAssertTrue(r.stdoutText.contains("USAGE"), tool)
        }
    }

    func testConvertMissingInputAndBadFile() throws {
        let dir = try Fixtures.temporaryDirectory()
        let out = dir.appendingPathComponent("o.st.zst").path
        var r = try runTool("convert", [dir.appendingPathComponent("nope.gguf").path, "-o", out, "--quiet"])
        XCTAssertEqual(r.status, 66)
        XCTAssertTrue(r.stderr.hasPrefix("convert: ") && r.stderr.contains("no such file"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)

        let bad = dir.appendingPathComponent("bad.gguf")
        try Data("GGUF\u{3}\0\0\0".utf8).write(to: bad)
        r = try runTool("convert", [bad.path, "-o", out, "--quiet"])
        XCTAssertEqual(r.status, 65)
        XCTAssertTrue(r.stderr.contains("truncated GGUF"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["bad.gguf"])

        r = try runTool("convert", [bad.path, "-o", out, "--to", "onnx"])
        XCTAssertEqual(r.status, 64)
    }

    func testConvertTinyModelThroughPipeAndEvaluateExactWindows() throws {
        let dir = try Fixtures.temporaryDirectory()
        let model = Fixtures.url("model/tiny_uniform.safetensors").path
        // To standard output (a pipe: compressed), then from standard input.
        let piped = try runTool("convert", [model, "-o", "-", "--quiet"])
        XCTAssertEqual(piped.status, 0, piped.stderr)
        XCTAssertEqual(Array(piped.stdout.prefix(4)), [0x28, 0xB5, 0x2F, 0xFD])
        let copy = dir.appendingPathComponent("copy.st.zst").path
        let back = try runTool("convert", ["-", "-o", copy, "--quiet"], stdin: piped.stdout)
        XCTAssertEqual(back.status, 0, back.stderr)

        // Exact windows from a tensor file; the loss equals the reference's.
        let ref = try TensorFile(path: Fixtures.url("model/tiny_uniform_ref.safetensors").path)
        let tokens = try ref.integers("tokens")
        let tokensPath = dir.appendingPathComponent("tokens.safetensors").path
        try writeTensorFile(path: tokensPath,
                            tensors: [(TensorEntry(name: "tokens", dtype: .I64, shape: [2, 19]),
                                       tokens.map { Int64($0) }.withUnsafeBytes { Array($0) })],
                            metadata: [:])
        let r = try runTool("evaluate", ["--model", copy, "--tokens", tokensPath, "--json", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any]
        let loss = try ref.doubles("loss")
        XCTAssertEqual(json?["windows"] as? Int, 2)
        XCTAssertEqual(json?["nll"] as? Double ?? 0, (loss[0] + loss[1]) / 2, accuracy: 1e-5)
    }

    func testEvaluateErrors() throws {
        let model = Fixtures.url("model/tiny_uniform.safetensors").path
        var r = try runTool("evaluate", ["--model", model, "--ppl", "nosuchset", "--seqlen", "16"])
        XCTAssertEqual(r.status, 66, r.stderr)
        XCTAssertTrue(r.stderr.contains("nosuchset: no such file"), r.stderr)

        r = try runTool("evaluate", ["--model", model, "--ppl", "wikitext2", "--seqlen", "65"])
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("exceeds the model's context of 64"), r.stderr)

        let dir = try Fixtures.temporaryDirectory()
        let empty = dir.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        r = try runTool("evaluate", ["--model", model, "--ppl", empty.path, "--seqlen", "16"])
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertTrue(r.stderr.contains("the text is empty"), r.stderr)

        let notModel = dir.appendingPathComponent("x.st")
        try Data("garbage!".utf8).write(to: notModel)
        r = try runTool("evaluate", ["--model", notModel.path, "--ppl", "wikitext2"])
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
    }

    /// The acceptance check: SmolLM2 on the first 4 windows of 512 tokens equals transformers'
    /// perplexity within 0.05% (scripts/reference/model_reference.py ppl).
    func testSmolLM2PerplexityMatchesTransformers() throws {
        struct Row: Decodable { var ppl: Double; var windows: Int }
        let refs = try JSONDecoder().decode([String: Row].self,
                                            from: Data(contentsOf: Fixtures.url("model/ppl.json")))
        let model = try Fixtures.requireModel()
        for (dataset, limit) in [("wikitext2", 4), ("ptb", 2), ("c4", 2)] {
            let r = try runTool("evaluate", ["--model", model, "--ppl", dataset, "--limit", "\(limit)",
                                             "--seqlen", "512", "--json", "--quiet"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let json = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any]
            let ppl = json?["perplexity"] as? Double ?? 0
            guard let ref = refs["\(dataset)_T512_limit\(limit)"] else { XCTFail(dataset); continue }
            XCTAssertEqual(ppl, ref.ppl, accuracy: ref.ppl * 5e-4, dataset)
        }
    }
}

final class TokenizeToolTests: XCTestCase {
    func testEncodeDecodeAndErrors() throws {
        let model = try Fixtures.requireModel()
        let text = Data("Hello world 123\n".utf8)
        let r = try runTool("tokenize", ["--model", model, "-"], stdin: text)
        XCTAssertEqual(r.status, 0, r.stderr)
        // Reference ids of transformers' tokenizer for this GGUF.
        XCTAssertEqual(r.stdoutText, "19556 905 216 33 34 35 198\n")
        let back = try runTool("tokenize", ["--model", model, "--decode", "-"], stdin: r.stdout)
        XCTAssertEqual(back.stdout, text)
        let bad = try runTool("tokenize", ["--model", model, "--decode", "-"], stdin: Data("12 x".utf8))
        XCTAssertEqual(bad.status, 65)
        XCTAssertTrue(bad.stderr.contains("'x' is not a token id"), bad.stderr)
        let missing = try runTool("tokenize", ["--model", "/nonexistent"], stdin: text)
        XCTAssertEqual(missing.status, 66, missing.stderr)
    }
}
