import Foundation
import Kernels
import LlamaModel
import TensorIO
import TestSupport
import XCTest

/// The tools as a user runs them: the built binaries, their output streams and exit codes.
final class ToolTests: XCTestCase {
    func testHelp() throws {
        for tool in ["convert", "evaluate", "calibrate", "score", "allocate", "slice", "restore"] {
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

/// A --tokens file of N pseudo-random windows of T ids below `vocabulary`.
func writeTokenWindows(_ path: String, N: Int, T: Int, vocabulary: Int, seed: Int) throws {
    var state = UInt64(seed + 1)
    var ids: [Int32] = []
    for _ in 0..<(N * T) {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        ids.append(Int32((state >> 33) % UInt64(vocabulary)))
    }
    try writeTensorFile(path: path, tensors: [(TensorEntry(name: "tokens", dtype: .I32, shape: [N, T]),
                                               ids.withUnsafeBytes { Array($0) })], metadata: [:])
}

final class CalibrateToolTests: XCTestCase {
    func writeTokens(_ path: String, N: Int, T: Int, vocabulary: Int, seed: Int) throws {
        try writeTokenWindows(path, N: N, T: T, vocabulary: vocabulary, seed: seed)
    }

    /// Shards through the binary, merged, equal one run; mismatched shards are refused.
    func testShardsMergeAndMismatch() throws {
        let dir = try Fixtures.temporaryDirectory()
        let model = Fixtures.url("model/tiny_uniform.safetensors").path
        let tokens = dir.appendingPathComponent("w.st").path, other = dir.appendingPathComponent("v.st").path
        // 1100 windows of 8 tokens: three batches of 512 windows, so up to three shards.
        try writeTokens(tokens, N: 1100, T: 8, vocabulary: 97, seed: 1)
        try writeTokens(other, N: 1100, T: 8, vocabulary: 97, seed: 2)
        func run(_ args: [String]) throws -> ToolResult {
            try runTool("calibrate", ["--model", model, "--quiet", "--gram", "o_proj,down_proj", "--gram-dtype", "f64"] + args)
        }
        let whole = dir.appendingPathComponent("whole.st.zst").path
        var r = try run(["--tokens", tokens, "-o", whole])
        XCTAssertEqual(r.status, 0, r.stderr)
        var shards: [String] = []
        for i in 0..<3 {
            shards.append(dir.appendingPathComponent("s\(i).st.zst").path)
            r = try run(["--tokens", tokens, "--shard", "\(i)/3", "-o", shards[i]])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let merged = dir.appendingPathComponent("merged.st.zst").path
        r = try runTool("calibrate", ["merge"] + shards + ["-o", merged])
        XCTAssertEqual(r.status, 0, r.stderr)
        let a = try TensorFile(path: whole), b = try TensorFile(path: merged)
        XCTAssertEqual(a.header.entries.map(\.name), b.header.entries.map(\.name))
        for e in a.header.entries where !e.dtype.isInteger {
            assertAllClose(try b.doubles(e.name), try a.doubles(e.name), atol: 1e-9, rtol: 1e-9, e.name)
        }
        XCTAssertEqual(b.metadata["windows_sha256"], a.metadata["windows_sha256"])

        // The same command twice: byte-identical files.
        let twice = dir.appendingPathComponent("twice.st.zst").path
        r = try run(["--tokens", tokens, "-o", twice])
        XCTAssertEqual(r.status, 0, r.stderr)
        let again = try Data(contentsOf: URL(fileURLWithPath: twice))
        r = try run(["--tokens", tokens, "-o", twice])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: twice)), again)

        let foreign = dir.appendingPathComponent("foreign.st.zst").path
        r = try run(["--tokens", other, "--shard", "1/3", "-o", foreign])
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = dir.appendingPathComponent("bad.st.zst").path
        r = try runTool("calibrate", ["merge", shards[0], foreign, "-o", out])
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertTrue(r.stderr.contains("differ in data_sha256") && r.stderr.contains("not shards of the same run"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        r = try run(["--tokens", tokens, "--shard", "3/3", "-o", out])
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))

        // A missing shard: refused unless --partial (a shard file of the union).
        r = try runTool("calibrate", ["merge", shards[0], shards[2], "-o", out])
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertEqual(r.stderr, "calibrate merge: shard 1 of 3 is missing (--partial merges a subset into a shard file)\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        r = try runTool("calibrate", ["merge", "--partial", shards[0], shards[2], "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "calibrate merge: 2 of 3 shards → a shard file of shards 0,2 in \(out)\n")
        XCTAssertEqual(try TensorFile(path: out).metadata["shards"], "0,2")
        try FileManager.default.removeItem(atPath: out)

        // Shard 1 from BF16-cached inputs: other statistics than the forward's, not merged with them.
        let cache = dir.appendingPathComponent("cache").path
        let cached = dir.appendingPathComponent("cached1.st.zst").path
        for extra in [[], ["--from-cache"]] {
            r = try run(["--tokens", tokens, "--shard", "1/3", "--cache", cache, "--cache-dtype", "bf16", "-o", cached] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        r = try runTool("calibrate", ["merge", shards[0], cached, shards[2], "-o", out])
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertTrue(r.stderr.contains("differ in layer_inputs (bf16 cache vs forward)"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    /// Bad calibration inputs: one clear line, non-zero exit, no output.
    /// Calibration data from standard input ("-") is read once, so it gives the statistics the same
    /// file gives (a pipe cannot be read twice); errors in it name "<stdin>".
    func testCalibrationDataFromStandardInput() throws {
        let dir = try Fixtures.temporaryDirectory()
        let tiny = Fixtures.url("model/tiny_uniform.safetensors").path
        let tokens = dir.appendingPathComponent("w.st").path
        try writeTokens(tokens, N: 6, T: 8, vocabulary: 97, seed: 4)
        // The tiny model with a SentencePiece-style tokenizer of "a", "b", "c" and "▁" (ids below its 97).
        let model = dir.appendingPathComponent("tiny-tokenizer.st").path
        let source = try TensorFile(path: tiny)
        let tokenizer = #"""
            {"version": "1.0", "added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}], "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}, "pre_tokenizer": null, "post_processor": null, "decoder": null, "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": false, "vocab": {"<unk>": 0, "<s>": 1, "\u2581": 2, "a": 3, "b": 4, "c": 5, "\u2581a": 6, "ab": 7, "\u2581ab": 8, "\u2581b": 9, "\u2581c": 10}, "merges": ["\u2581 a", "a b", "\u2581a b", "\u2581 b", "\u2581 c"]}}
            """#
        let writer = try TensorFileWriter(path: model, entries: source.header.entries,
                                          metadata: source.metadata.merging(["tokenizer": tokenizer]) { $1 })
        try writer.complete {
            for e in source.header.entries { try source.withBytes(e.name) { try writer.write(e.name, bytes: $0) } }
        }
        let docs = dir.appendingPathComponent("docs.jsonl")
        try Data(#"""
            {"text": "ab ab a b abab ba cab ab a b c ab ab ba ab a"}
            {"text": "b a ab abc ab ab b a a b ab abab ab c c ab b a b ab"}

            """#.utf8).write(to: docs)
        func stats(_ args: [String], stdin: Data?, _ name: String) throws -> TensorFile {
            let out = dir.appendingPathComponent(name).path
            let r = try runTool("calibrate", args + ["-o", out, "--quiet"], stdin: stdin)
            XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
            return try TensorFile(path: out)
        }
        for (args, file, input) in [
            (["--model", tiny, "--tokens"], tokens, "tokens"),
            (["--model", model, "--seqlen", "16", "--samples", "3", "--jsonl"], docs.path, "jsonl"),
        ] {
            let named = try stats(args + [file], stdin: nil, "\(input)-file.st.zst")
            let piped = try stats(args + ["-"], stdin: try Data(contentsOf: URL(fileURLWithPath: file)),
                                  "\(input)-stdin.st.zst")
            XCTAssertEqual(piped.metadata["source"], "-")
            for key in ["data_sha256", "windows_sha256", "samples", "seqlen"] {
                XCTAssertEqual(piped.metadata[key], named.metadata[key], "\(input) \(key)")
            }
            XCTAssertEqual(piped.header.entries.map(\.name), named.header.entries.map(\.name))
            for e in named.header.entries where !e.dtype.isInteger {
                XCTAssertEqual(try piped.doubles(e.name), try named.doubles(e.name), "\(input) \(e.name)")
            }
        }
        let out = dir.appendingPathComponent("bad.st.zst").path
        let r = try runTool("calibrate", ["--model", model, "--seqlen", "16", "--jsonl", "-", "-o", out, "--quiet"],
                            stdin: Data("{\"text\": \"fine\"}\n{\"body\": 1}\n".utf8))
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("<stdin>:2: no string field 'text'"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }

    func testBadInputs() throws {
        let dir = try Fixtures.temporaryDirectory()
        let out = dir.appendingPathComponent("stats.st.zst").path
        let tiny = Fixtures.url("model/tiny_uniform.safetensors").path
        let big = dir.appendingPathComponent("big.st").path
        try writeTokens(big, N: 2, T: 8, vocabulary: 500, seed: 3)
        let noText = dir.appendingPathComponent("docs.jsonl")
        try Data("{\"text\": \"a document\"}\n{\"body\": \"no text here\"}\n".utf8).write(to: noText)
        let short = dir.appendingPathComponent("short.txt")
        try Data("Only a few words.".utf8).write(to: short)
        let model = try Fixtures.requireModel()
        let cases: [([String], Int32, String)] = [
            (["--model", tiny, "--tokens", big], 65, "outside the vocabulary (97)"),
            (["--model", model, "--jsonl", noText.path, "--seqlen", "16"], 65, "docs.jsonl:2: no string field 'text'"),
            (["--model", model, "--text", short.path, "--seqlen", "64"], 65, "too short for one window of 64"),
            (["--model", tiny, "--tokens", big, "--samples", "4"], 64, "do not apply to --tokens"),
            (["--model", tiny, "--text", short.path, "--jsonl", noText.path], 64, "exactly one of"),
        ]
        for (args, status, message) in cases {
            let r = try runTool("calibrate", args + ["-o", out, "--quiet"])
            XCTAssertEqual(r.status, status, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(args)")
        }
    }
}

final class ScoreToolTests: XCTestCase {
    /// score through the binary: every metric writes a file; statistics of another model, a
    /// shard and an unknown metric are refused with one line and no output.
    func testScoreMetricsAndRefusals() throws {
        let dir = try Fixtures.temporaryDirectory()
        let uniform = Fixtures.url("model/tiny_uniform.safetensors").path
        let other = Fixtures.url("model/tiny_nonuniform.safetensors").path
        let tokens = dir.appendingPathComponent("w.st").path
        try writeTokenWindows(tokens, N: 1100, T: 8, vocabulary: 61, seed: 4)
        let stats = dir.appendingPathComponent("stats.st.zst").path
        let foreign = dir.appendingPathComponent("foreign.st.zst").path
        let shard = dir.appendingPathComponent("shard.st.zst").path
        for (model, out, extra) in [(uniform, stats, [String]()), (other, foreign, []), (uniform, shard, ["--shard", "0/2"])] {
            let r = try runTool("calibrate", ["--model", model, "--tokens", tokens, "-o", out, "--quiet"] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        for metric in ["flap", "wifv", "ifv", "wifn", "wanda-sp", "mag-sp", "cfsp", "fasp"] {
            let out = dir.appendingPathComponent("\(metric).st.zst").path
            let r = try runTool("score", ["--model", uniform, "--stats", stats, "--metric", metric, "-o", out, "--quiet"])
            XCTAssertEqual(r.status, 0, "\(metric): \(r.stderr)")
            let file = try TensorFile(path: out)
            XCTAssertEqual(file.metadata["metric"], metric)
            XCTAssertEqual(file.header.entry("model.layers.1.mlp.down_proj.channel_score")?.shape, [96])
            XCTAssertEqual(file.header.entry("model.layers.0.self_attn.o_proj.channel_score")?.shape,
                           metric == "cfsp" ? nil : [64])
        }
        let out = dir.appendingPathComponent("bad.st.zst").path
        let cases: [([String], Int32, String)] = [
            (["--model", uniform, "--stats", foreign, "--metric", "flap"], 65, "statistics of another model"),
            (["--model", uniform, "--stats", shard, "--metric", "flap"], 65, "merge the shards first"),
            (["--model", uniform, "--stats", stats, "--metric", "nosuch"], 64, "unknown metric 'nosuch'"),
            (["--model", uniform, "--stats", uniform, "--metric", "flap"], 65, "not a statistics file"),
        ]
        for (args, status, message) in cases {
            let r = try runTool("score", args + ["-o", out, "--quiet"])
            XCTAssertEqual(r.status, status, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message) && r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
    }
}

final class AllocateToolTests: XCTestCase {
    func testAllocateWritesAPlanTableAndPlot() throws {
        let dir = try Fixtures.temporaryDirectory()
        let scores = Fixtures.url("allocate/smollm2_flap_scores.safetensors").path
        let plan = dir.appendingPathComponent("plan.st.zst").path, svg = dir.appendingPathComponent("plan.svg").path
        var r = try runTool("allocate", ["--scores", scores, "--ratio", "0.2", "--structure", "AL-AM",
                                         "--attention-unit", "head", "-o", plan, "--plot", svg])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("(asked 0.2000)"), r.stderr)
        let file = try TensorFile(path: plan)
        XCTAssertEqual(file.metadata["format"], "prunekit-plan")
        XCTAssertEqual(Double(file.metadata["achieved"] ?? "") ?? 0, 0.2, accuracy: 0.01)
        XCTAssertEqual(file.header.entries.count, 90)
        XCTAssertTrue(try String(contentsOfFile: svg, encoding: .utf8).hasPrefix("<svg"))

        let out = dir.appendingPathComponent("bad.st").path
        let stats = Fixtures.url("calibrate/tiny_uniform_stats.safetensors").path
        let cases: [([String], Int32, String)] = [
            (["--scores", stats, "--ratio", "0.2", "--structure", "AL-AM"], 65, "not a scores file"),
            (["--scores", scores, "--ratio", "1.2", "--structure", "AL-AM"], 64, "--ratio must be in [0, 1)"),
            (["--scores", scores, "--ratio", "0.2", "--structure", "XL"], 64, "--structure must be"),
            (["--scores", scores, "--ratio", "0.2", "--blocks", "angular", "--prune", "attention,mlp"], 64, "MLP only"),
            (["--scores", scores, "--ratio", "0.2", "--structure", "UL-UM", "--layers", "5-40"], 64, "--layers must be"),
        ]
        for (args, status, message) in cases {
            r = try runTool("allocate", args + ["-o", out, "--quiet"])
            XCTAssertEqual(r.status, status, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
    }
}

final class SliceToolTests: XCTestCase {
    /// calibrate → score → allocate → slice → evaluate through the binaries on the tiny model; a
    /// plan made for another model is refused.
    func testPipelineOnTinyModelAndRefusal() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ n: String) -> String { dir.appendingPathComponent(n).path }
        let model = Fixtures.url("model/tiny_uniform.safetensors").path
        try writeTokenWindows(path("w.st"), N: 1100, T: 8, vocabulary: 97, seed: 9)
        let steps: [(String, [String])] = [
            ("calibrate", ["--model", model, "--tokens", path("w.st"), "--gram", "o_proj,down_proj", "-o", path("stats.st.zst")]),
            ("score", ["--model", model, "--stats", path("stats.st.zst"), "--metric", "flap", "-o", path("scores.st.zst")]),
            ("allocate", ["--scores", path("scores.st.zst"), "--ratio", "0.3", "--structure", "AL-AM", "-o", path("plan.st.zst")]),
            ("slice", ["--model", model, "--plan", path("plan.st.zst"), "-o", path("sliced.st.zst")]),
            ("evaluate", ["--model", path("sliced.st.zst"), "--tokens", path("w.st"), "--limit", "4", "--json"]),
        ] + ["bias", "lsq", "bias+lsq"].flatMap { m in [
            ("restore", ["--model", path("sliced.st.zst"), "--dense", model, "--stats", path("stats.st.zst"),
                         "--plan", path("plan.st.zst"), "--method", m, "-o", path("r-\(m).st.zst")]),
            ("evaluate", ["--model", path("r-\(m).st.zst"), "--tokens", path("w.st"), "--limit", "4", "--json"]),
        ] }
        for (tool, args) in steps {
            let r = try runTool(tool, args + ["--quiet"])
            XCTAssertEqual(r.status, 0, "\(tool): \(r.stderr)")
        }
        let sliced = try TensorFile(path: path("sliced.st.zst"))
        XCTAssertNotNil(sliced.metadata["parent_fingerprint"])
        XCTAssertNotEqual(sliced.metadata["fingerprint"], sliced.metadata["parent_fingerprint"])

        let restored = try TensorFile(path: path("r-bias.st.zst"))
        XCTAssertEqual(restored.header.entry("model.layers.0.mlp.down_proj.bias")?.shape, [64])

        let other = Fixtures.url("model/tiny_nonuniform.safetensors").path
        var r = try runTool("slice", ["--model", other, "--plan", path("plan.st.zst"), "-o", path("bad.st"), "--quiet"])
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertTrue(r.stderr.contains("a plan for another model"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("bad.st")))
        // restore refuses a model not sliced from the given dense model.
        r = try runTool("restore", ["--model", path("sliced.st.zst"), "--dense", other, "--stats", path("stats.st.zst"),
                                    "--plan", path("plan.st.zst"), "--method", "bias", "-o", path("bad.st"), "--quiet"])
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertTrue(r.stderr.contains("not sliced from"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("bad.st")))
    }

    /// FASP sequentially through the binaries (calibrate --sequential with the recipe, then the usual
    /// stages with the same settings); the usage errors of the recipe and a stage asked for another
    /// recipe: one line, exit 64, no output.
    func testSequentialThroughTheToolsAndItsRefusals() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ n: String) -> String { dir.appendingPathComponent(n).path }
        let model = Fixtures.url("model/tiny_uniform.safetensors").path
        try writeTokenWindows(path("w.st"), N: 64, T: 8, vocabulary: 97, seed: 3)
        let recipe = ["--metric", "fasp", "--ratio", "0.3", "--structure", "UL-UM", "--attention-unit", "vo", "--restore", "lsq"]
        let calibrate = ["--model", model, "--tokens", path("w.st"), "--gram", "o_proj,down_proj", "--gram-dtype", "f64"]
        let steps: [(String, [String])] = [
            ("calibrate", calibrate + ["--sequential"] + recipe + ["-o", path("stats.st.zst")]),
            ("score", ["--model", model, "--stats", path("stats.st.zst"), "--metric", "fasp", "-o", path("scores.st.zst")]),
            ("allocate", ["--scores", path("scores.st.zst"), "--ratio", "0.3", "--structure", "UL-UM", "--attention-unit", "vo",
                          "-o", path("plan.st.zst")]),
            ("slice", ["--model", model, "--plan", path("plan.st.zst"), "-o", path("sliced.st.zst")]),
            ("restore", ["--model", path("sliced.st.zst"), "--dense", model, "--stats", path("stats.st.zst"),
                         "--plan", path("plan.st.zst"), "--method", "lsq", "-o", path("pruned.st.zst")]),
            ("evaluate", ["--model", path("pruned.st.zst"), "--tokens", path("w.st"), "--limit", "4", "--json"]),
        ]
        for (tool, args) in steps {
            let r = try runTool(tool, args + ["--quiet"])
            XCTAssertEqual(r.status, 0, "\(tool): \(r.stderr)")
        }
        XCTAssertTrue(try TensorFile(path: path("stats.st.zst")).metadata["sequential"]?.contains("attention_unit=vo") == true)

        let refusals: [(String, [String], String)] = [
            ("calibrate", calibrate + ["--sequential", "--metric", "fasp"], "needs --metric, --ratio and one of --structure and --widths"),
            ("calibrate", calibrate + ["--metric", "fasp", "--ratio", "0.3", "--structure", "UL-UM"], "go with --sequential"),
            ("calibrate", calibrate + ["--sequential", "--metric", "fasp", "--ratio", "0.3", "--structure", "AL-AM"], "UL-UM or UL-MM"),
            ("calibrate", calibrate + ["--sequential", "--shard", "0/2"] + recipe, "not with --from-cache or --shard"),
            ("calibrate", calibrate + ["--sequential", "--metric", "nope", "--ratio", "0.3", "--structure", "UL-UM"], "--metric must be one of"),
            ("allocate", ["--scores", path("scores.st.zst"), "--ratio", "0.3", "--structure", "UL-UM"],
             "attention_unit vo (allocate asks group)"),
            ("restore", ["--model", path("sliced.st.zst"), "--dense", model, "--stats", path("stats.st.zst"),
                         "--plan", path("plan.st.zst"), "--method", "lsq", "--damp", "0.1"], "damp 0.01 (restore asks 0.1)"),
        ]
        for (tool, args, message) in refusals {
            let r = try runTool(tool, args + ["-o", path("refused.st"), "--quiet"])
            XCTAssertEqual(r.status, 64, "\(tool) \(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(tool): \(r.stderr)")
            if !message.hasPrefix("needs") && !message.hasPrefix("go with") {  // the argument parser adds its usage
                XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: path("refused.st")))
        }
    }

    /// CFSP's blocks sequentially once their budgets are fixed: the angular budgets from a one-pass
    /// run, then calibrate --sequential --widths keeps each layer at its budget while choosing the
    /// channels on the pruned layers' outputs; allocate --widths rebuilds the same plan.
    func testSequentialWithFixedWidthsThroughTheTools() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ n: String) -> String { dir.appendingPathComponent(n).path }
        let model = Fixtures.url("model/tiny_uniform.safetensors").path
        try writeTokenWindows(path("w.st"), N: 64, T: 8, vocabulary: 97, seed: 5)
        let calibrate = ["--model", model, "--tokens", path("w.st")]
        let steps: [(String, [String])] = [
            ("calibrate", calibrate + ["-o", path("dense.stats.st.zst")]),
            ("score", ["--model", model, "--stats", path("dense.stats.st.zst"), "--metric", "cfsp", "-o", path("dense.scores.st.zst")]),
            ("allocate", ["--scores", path("dense.scores.st.zst"), "--ratio", "0.3", "--blocks", "angular", "--prune", "mlp",
                          "-o", path("budgets.st.zst")]),
            ("calibrate", calibrate + ["--sequential", "--metric", "cfsp", "--ratio", "0.3", "--widths", path("budgets.st.zst"),
                                       "--prune", "mlp", "-o", path("stats.st.zst")]),
            ("score", ["--model", model, "--stats", path("stats.st.zst"), "--metric", "cfsp", "-o", path("scores.st.zst")]),
            ("allocate", ["--scores", path("scores.st.zst"), "--ratio", "0.3", "--widths", path("budgets.st.zst"), "--prune", "mlp",
                          "-o", path("plan.st.zst")]),
            ("slice", ["--model", model, "--plan", path("plan.st.zst"), "-o", path("pruned.st.zst")]),
            ("evaluate", ["--model", path("pruned.st.zst"), "--tokens", path("w.st"), "--limit", "4", "--json"]),
        ]
        for (tool, args) in steps {
            let r = try runTool(tool, args + ["--quiet"])
            XCTAssertEqual(r.status, 0, "\(tool): \(r.stderr)")
        }
        let budgets = try TensorFile(path: path("budgets.st.zst")), plan = try TensorFile(path: path("plan.st.zst"))
        for l in 0..<2 {
            let channels = "model.layers.\(l).mlp.kept_channels", heads = "model.layers.\(l).self_attn.kept_heads"
            XCTAssertEqual(try plan.integers(channels).count, try budgets.integers(channels).count)
            XCTAssertEqual(try plan.integers(heads), try budgets.integers(heads))
        }
        XCTAssertEqual(plan.metadata["structure"], "widths")
        XCTAssertTrue(try TensorFile(path: path("stats.st.zst")).metadata["sequential"]?.contains("structure=widths") == true)

        let refusals: [(String, [String], String)] = [
            ("allocate", ["--scores", path("scores.st.zst"), "--ratio", "0.3", "--structure", "UL-UM", "--prune", "mlp"],
             "structure widths (allocate asks UL-UM)"),
            ("allocate", ["--scores", path("scores.st.zst"), "--ratio", "0.3", "--structure", "UL-UM", "--widths", path("budgets.st.zst")],
             "exactly one of --structure, --blocks and --widths"),
            ("calibrate", calibrate + ["--sequential", "--metric", "cfsp", "--ratio", "0.3", "--blocks", "angular"], "one of --structure and --widths"),
            ("calibrate", calibrate + ["--sequential", "--metric", "cfsp", "--ratio", "0.3", "--widths", path("w.st"), "--prune", "mlp"],
             "w.st"),
        ]
        for (tool, args, message) in refusals {
            let r = try runTool(tool, args + ["-o", path("refused.st"), "--quiet"])
            XCTAssertNotEqual(r.status, 0, "\(tool) \(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(tool): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: path("refused.st")))
        }
    }

    /// FASP through the binaries: V/O dimensions and MLP channels, least-squares restoration, the
    /// narrowed model evaluates; the exports that cannot hold narrowed value heads refuse it.
    func testFASPValueDimensionsThroughTheTools() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ n: String) -> String { dir.appendingPathComponent(n).path }
        let model = Fixtures.url("model/tiny_uniform.safetensors").path
        try writeTokenWindows(path("w.st"), N: 1100, T: 8, vocabulary: 97, seed: 11)
        let steps: [(String, [String])] = [
            ("calibrate", ["--model", model, "--tokens", path("w.st"), "--gram", "o_proj,down_proj", "--gram-dtype", "f64", "-o", path("stats.st.zst")]),
            ("score", ["--model", model, "--stats", path("stats.st.zst"), "--metric", "fasp", "-o", path("scores.st.zst")]),
            ("allocate", ["--scores", path("scores.st.zst"), "--ratio", "0.3", "--structure", "UL-UM", "--attention-unit", "vo", "-o", path("plan.st.zst")]),
            ("slice", ["--model", model, "--plan", path("plan.st.zst"), "-o", path("sliced.st.zst")]),
            ("restore", ["--model", path("sliced.st.zst"), "--dense", model, "--stats", path("stats.st.zst"),
                         "--plan", path("plan.st.zst"), "--method", "lsq", "-o", path("restored.st.zst")]),
            ("evaluate", ["--model", path("restored.st.zst"), "--tokens", path("w.st"), "--limit", "4", "--json"]),
        ]
        for (tool, args) in steps {
            let r = try runTool(tool, args + ["--quiet"])
            XCTAssertEqual(r.status, 0, "\(tool): \(r.stderr)")
        }
        let plan = try TensorFile(path: path("plan.st.zst"))
        let rows = try plan.integers("model.layers.0.self_attn.kept_value_dims")
        XCTAssertLessThan(rows.count, 32)
        let restored = try Model.open(path("restored.st.zst"))
        let widths = try XCTUnwrap(restored.config.valueWidths)
        // Each KV head (16 values) keeps the plan's rows that fall in it; a head left without any goes.
        let perGroup = [rows.filter { $0 < 16 }.count, rows.filter { $0 >= 16 }.count].filter { $0 > 0 }
        XCTAssertEqual(widths[0], perGroup)
        XCTAssertEqual(restored.shape("model.layers.0.self_attn.o_proj.weight"), [64, 2 * rows.count])
        for (to, what) in [("hf", "transformers"), ("gguf", "llama.cpp")] {
            let out = path("export-\(to)")
            let r = try runTool("convert", [path("restored.st.zst"), "--to", to, "-o", out, "--quiet"])
            XCTAssertEqual(r.status, 65, r.stderr)
            XCTAssertTrue(r.stderr.contains("narrower than head_dim") && r.stderr.contains(what)
                          && r.stderr.split(separator: "\n").count == 1, r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
            guard to == "hf" else { continue }  // (the tiny model has no tokenizer for a GGUF)
            let padded = try runTool("convert", [path("restored.st.zst"), "--to", to, "--pad-values", "-o", out, "--quiet"])
            XCTAssertEqual(padded.status, 0, padded.stderr)
            XCTAssertTrue(FileManager.default.fileExists(atPath: out))
        }
    }

    /// evaluate --tasks as a user runs it: the table on stderr, the JSON on stdout, and one line for
    /// an unknown task or a second mode.
    func testEvaluateZeroShotTasks() throws {
        let model = try Fixtures.requireModel()
        let r = try runTool("evaluate", ["--model", model, "--tasks", "piqa,winogrande", "--limit", "3", "--json", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any]
        let tasks = json?["tasks"] as? [String: [String: Any]]
        XCTAssertEqual(tasks?["piqa"]?["n"] as? Int, 3)
        XCTAssertNotNil(tasks?["piqa"]?["acc_norm"])
        XCTAssertNil(tasks?["winogrande"]?["acc_norm"])
        let piqa = tasks?["piqa"]?["acc_norm"] as? Double ?? -1, wino = tasks?["winogrande"]?["acc"] as? Double ?? -1
        XCTAssertEqual((json?["average"] as? [String: Double])?["acc"] ?? -1, (piqa + wino) / 2, accuracy: 1e-12)
        XCTAssertTrue(r.stderr.contains("acc_norm") && r.stderr.contains("average"), r.stderr)
        let unknown = try runTool("evaluate", ["--model", model, "--tasks", "piqa,lambada", "--quiet"])
        XCTAssertEqual(unknown.status, 64, unknown.stderr)
        XCTAssertEqual(unknown.stderr, "evaluate: unknown task 'lambada' (known: boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa, or all)\n")
        let both = try runTool("evaluate", ["--model", model, "--tasks", "piqa", "--ppl", "wikitext2"])
        XCTAssertEqual(both.status, 64, both.stderr)
    }

    /// evaluate --generate: the greedy continuation on stdout (the same twice), the speed on
    /// stderr; a prompt and length beyond the context is one line and exit 64.
    func testEvaluateGenerate() throws {
        let model = try Fixtures.requireModel()
        let args = ["--model", model, "--generate", "def fibonacci(n):", "--max-tokens", "12"]
        let a = try runTool("evaluate", args), b = try runTool("evaluate", args + ["--quiet"])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(a.stdoutText, b.stdoutText)
        XCTAssertTrue(a.stdoutText.hasPrefix("\n    if n == 0:"), a.stdoutText)  // transformers' greedy tokens
        XCTAssertTrue(a.stderr.contains("tokens/s"), a.stderr)
        XCTAssertEqual(b.stderr, "")
        let sampled = ["--model", model, "--generate", "Once upon a time", "--max-tokens", "8", "--temperature", "0.8", "--seed", "5", "--quiet"]
        XCTAssertEqual(try runTool("evaluate", sampled).stdoutText, try runTool("evaluate", sampled).stdoutText)
        let long = try runTool("evaluate", ["--model", model, "--generate", "x", "--max-tokens", "9000"])
        XCTAssertEqual(long.status, 64)
        XCTAssertEqual(long.stderr.split(separator: "\n").count, 1, long.stderr)
        XCTAssertTrue(long.stderr.contains("exceed the model's context of 8192 tokens"), long.stderr)
    }

    /// A tool whose OpenBLAS fell back to its generic kernels on a CPU with AVX2 + FMA re-executes itself with the
    /// core type the CPU's flags support; a core type the user set stands.
    func testToolsRunTheCPUsKernels() throws {
        let tiny = Fixtures.url("model/tiny_uniform.safetensors").path
        func core(_ environment: [String: String]) throws -> String {
            let r = try runTool("evaluate", ["--model", tiny, "--report", "--json", "--quiet"], environment: environment)
            XCTAssertEqual(r.status, 0, r.stderr)
            let json = try JSONSerialization.jsonObject(with: r.stdout) as? [String: [String: Any]]
            return try XCTUnwrap(json?["model"]?["blas_core"] as? String)
        }
        XCTAssertEqual(try core(["OPENBLAS_CORETYPE": "Sandybridge"]), "Sandybridge")
        let flags = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8).split(separator: "\n")
            .first { $0.hasPrefix("flags") }.map { $0.split(separator: " ") } ?? []
        let chosen = try core(["OPENBLAS_CORETYPE": ""])
        if BLAS.coreType(cpuFlags: flags) != nil {
            XCTAssertTrue(["Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"].contains(chosen), chosen)
        }
    }

    /// evaluate --report: the counts of both models, measured speeds, ratios on stderr and JSON.
    func testEvaluateReport() throws {
        let tiny = Fixtures.url("model/tiny_uniform.safetensors").path
        let r = try runTool("evaluate", ["--model", tiny, "--report", "--compare", tiny, "--json", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: r.stdout) as? [String: [String: Any]]
        let mine = try XCTUnwrap(json?["model"]), other = try XCTUnwrap(json?["compare"])
        let model = try Model.open(tiny)
        XCTAssertEqual(mine["parameters"] as? Int, model.totalParameters)
        XCTAssertEqual(mine["decoder_linear_parameters"] as? Int, model.layerLinearParameters)
        XCTAssertEqual(mine["macs_per_token_128"] as? Double, other["macs_per_token_128"] as? Double)
        // The tiny model's context is 64 tokens: no speed at 128 or beyond (0, not a made-up figure).
        for key in ["prefill_tokens_per_second_128", "prefill_tokens_per_second_2048", "decode_tokens_per_second_128"] {
            XCTAssertEqual(mine[key] as? Double, 0, key)
        }
        let smol = try runTool("evaluate", ["--model", try Fixtures.requireModel(), "--report", "--json", "--quiet"])
        XCTAssertEqual(smol.status, 0, smol.stderr)
        let measured = try XCTUnwrap((try JSONSerialization.jsonObject(with: smol.stdout) as? [String: [String: Any]])?["model"])
        for key in ["prefill_tokens_per_second_128", "prefill_tokens_per_second_2048", "decode_tokens_per_second_128",
                    "decode_tokens_per_second_1024"] {
            XCTAssertGreaterThan(measured[key] as? Double ?? 0, 0, key)
        }
        XCTAssertTrue(r.stderr.contains("ratio") && r.stderr.contains("1.000×"), r.stderr)
        let bad = try runTool("evaluate", ["--model", tiny, "--compare", tiny])
        XCTAssertEqual(bad.status, 64, bad.stderr)
        // Each model's peak memory, the compared one measured in a process of its own; its failure
        // is one line naming it, with its exit code.
        XCTAssertGreaterThan(mine["peak_rss_mb"] as? Double ?? 0, 0)
        XCTAssertGreaterThan(other["peak_rss_mb"] as? Double ?? 0, 0)
        let missing = try runTool("evaluate", ["--model", tiny, "--report", "--compare", "/nonexistent/dense.st"])
        XCTAssertEqual(missing.status, 66, missing.stderr)
        XCTAssertEqual(missing.stderr.split(separator: "\n").count, 1, missing.stderr)
        XCTAssertTrue(missing.stderr.hasPrefix("evaluate: --compare /nonexistent/dense.st: "), missing.stderr)
    }
}
