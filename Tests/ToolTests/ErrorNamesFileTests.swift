import Foundation
import TensorIO
import TestSupport
import XCTest

/// Issue 18: an error met while reading one of the files a tool is given names that file, so that
/// a user who passes several knows which one is bad — one line on stderr, the exit code of its
/// kind, and no output written. Each test but `testAlreadyNamed` is a case that once printed a line
/// without the path (its former line quoted).
final class ErrorNamesFileTests: XCTestCase {
    let tiny = Fixtures.url("model/tiny_uniform.safetensors").path

    /// Runs `tool` and checks the refusal: `status`, exactly one line on stderr holding `bad` (the
    /// file at fault) and `message`, nothing on stdout, and `output` (if any) not written.
    func expectNamed(_ tool: String, _ arguments: [String], status: Int32 = 65, bad: String, message: String,
                     output: String?, environment: [String: String]? = nil,
                     file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try runTool(tool, arguments, environment: environment)
        XCTAssertEqual(r.status, status, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.hasSuffix("\n") && r.stderr.filter { $0 == "\n" }.count == 1,
                      "not one line: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(bad), "\(bad) not named: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(message), r.stderr, file: file, line: line)
        XCTAssertEqual(r.stdout.count, 0, r.stdoutText, file: file, line: line)
        if let output {
            XCTAssertFalse(FileManager.default.fileExists(atPath: output), "\(output) written", file: file, line: line)
        }
    }

    /// A copy of tensor file `source` at `path` with its metadata changed by `change`.
    func copy(_ source: String, to path: String, _ change: (inout [String: String]) -> Void) throws {
        let file = try TensorFile(path: source)
        var metadata = file.metadata
        change(&metadata)
        let writer = try TensorFileWriter(path: path, entries: file.header.entries, metadata: metadata)
        try writer.complete {
            for e in file.header.entries { try file.withBytes(e.name) { try writer.write(e.name, bytes: $0) } }
        }
    }

    /// A tokenizer.json that parses as JSON but is refused (not a BPE model).
    let wordPiece = #"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#

    /// A safetensors header whose tensor name is empty passes the JSON checks; the layout check
    /// that refuses it did not know the file (before: "invalid tensor name ''").
    func testEmptyTensorName() throws {
        let dir = try Fixtures.temporaryDirectory()
        let bad = dir.appendingPathComponent("empty-name.st").path, out = dir.appendingPathComponent("out.st").path
        let header = Array(#"{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.utf8)
        let bytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header + [0, 0, 0, 0]
        try Data(bytes).write(to: URL(fileURLWithPath: bad))
        try expectNamed("convert", [bad, "-o", out, "--quiet"], bad: bad, message: "invalid tensor name ''", output: out)
    }

    /// A GGUF whose sizes fail the configuration's checks (before: "layer 0: 4 heads are not a
    /// multiple of 3 KV heads", no file).
    func testGGUFConfiguration() throws {
        let dir = try Fixtures.temporaryDirectory()
        let bad = dir.appendingPathComponent("heads.gguf").path, out = dir.appendingPathComponent("out.st").path
        let writer = try GGUFWriter(path: bad, metadata: [
            ("general.architecture", .string("llama")), ("llama.block_count", .uint32(2)),
            ("llama.embedding_length", .uint32(64)), ("llama.attention.head_count", .uint32(4)),
            ("llama.attention.head_count_kv", .uint32(3)), ("llama.feed_forward_length", .uint32(128)),
            ("llama.context_length", .uint32(128)),
        ], tensors: [.init(name: "token_embd.weight", shape: [100, 64], type: .F32)])
        try writer.complete { try writer.write("token_embd.weight", [Float](repeating: 0, count: 6400)) }
        try expectNamed("convert", [bad, "-o", out, "--quiet"], bad: bad,
                        message: "layer 0: 4 heads are not a multiple of 3 KV heads", output: out)
    }

    /// `tokenize`'s tokenizer from each source: a tokenizer.json file, a Hugging Face directory, a
    /// model file's metadata, a GGUF's metadata (before: "tokenizer.json: …" or "GGUF has no …",
    /// whichever file it was).
    func testTokenizerSources() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let out = path("out.json")
        try Data(wordPiece.utf8).write(to: URL(fileURLWithPath: path("tok.json")))
        try expectNamed("tokenize", ["--tokenizer-json", path("tok.json"), "--write-json", out], bad: path("tok.json"),
                        message: "only BPE models are supported, got WordPiece", output: out)

        try FileManager.default.createDirectory(atPath: path("hf"), withIntermediateDirectories: false)
        try Data(wordPiece.utf8).write(to: URL(fileURLWithPath: path("hf/tokenizer.json")))
        try expectNamed("tokenize", ["--model", path("hf"), "--write-json", out], bad: path("hf"),
                        message: "only BPE models are supported, got WordPiece", output: out)

        try copy(tiny, to: path("model.st")) { $0["tokenizer"] = wordPiece }
        try expectNamed("tokenize", ["--model", path("model.st"), "--write-json", out], bad: path("model.st"),
                        message: "only BPE models are supported, got WordPiece", output: out)

        let gguf = path("vocab.gguf")
        let writer = try GGUFWriter(path: gguf, metadata: [("general.architecture", .string("llama")),
                                                           ("tokenizer.ggml.model", .string("gpt2"))],
                                    tensors: [.init(name: "token_embd.weight", shape: [1, 32], type: .F32)])
        try writer.complete { try writer.write("token_embd.weight", [Float](repeating: 0, count: 32)) }
        try expectNamed("tokenize", ["--model", gguf, "--write-json", out], bad: gguf,
                        message: "GGUF has no tokenizer.ggml.tokens", output: out)
    }

    /// `calibrate` on text built the model's tokenizer itself (before: "tokenizer.json: only BPE
    /// models are supported, got WordPiece", no model named).
    func testCalibrateTokenizer() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try copy(tiny, to: path("model.st")) { $0["tokenizer"] = wordPiece }
        try Data(String(repeating: "some calibration text ", count: 20).utf8).write(to: URL(fileURLWithPath: path("t.txt")))
        try expectNamed("calibrate", ["--model", path("model.st"), "--text", path("t.txt"), "--samples", "2", "--seqlen", "8",
                                      "-o", path("stats.st"), "--quiet"],
                        bad: path("model.st"), message: "only BPE models are supported", output: path("stats.st"))
    }

    /// `convert --to hf` of a model whose tokenizer is not JSON (before: "the model's
    /// tokenizer.json: invalid JSON at byte 1: …"); the directory is not left behind.
    func testExportWithUnparsableTokenizer() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try copy(tiny, to: path("model.st")) { $0["tokenizer"] = "{not json" }
        try expectNamed("convert", [path("model.st"), "--to", "hf", "-o", path("hf"), "--quiet"], bad: path("model.st"),
                        message: "the tokenizer: invalid JSON at byte 1", output: path("hf"))
    }

    /// Standard input is "<stdin>" in every reader's messages (before: "-: …" from the data readers).
    func testStandardInputIsNamed() throws {
        let dir = try Fixtures.temporaryDirectory()
        let out = dir.appendingPathComponent("out.st").path
        let cases: [(tool: String, args: [String], input: Data, message: String)] = [
            ("evaluate", ["--model", tiny, "--tokens", "-", "--quiet"], try Data(contentsOf: URL(fileURLWithPath: tiny)),
             "<stdin>: no integer tensor 'tokens'"),
            ("finetune", ["--model", tiny, "--tokens", "-", "--steps", "1", "-o", out, "--quiet"],
             try Data(contentsOf: URL(fileURLWithPath: tiny)), "<stdin>: no integer tensor 'tokens'"),
            ("calibrate", ["--model", tiny, "--tokens", "-", "-o", out, "--quiet"], Data("{}".utf8), "<stdin>: "),
        ]
        for c in cases {
            let r = try runTool(c.tool, c.args, stdin: c.input)
            XCTAssertNotEqual(r.status, 0, "\(c.tool): \(r.stderr)")
            XCTAssertEqual(r.stderr.filter { $0 == "\n" }.count, 1, "\(c.tool): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(c.message), "\(c.tool): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains(" -:"), "\(c.tool): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), c.tool)
        }
    }

    /// A Hugging Face directory whose config.json exists but cannot be read as a file (before: "no
    /// config.json in the directory"), and one whose tokenizer.json is not UTF-8 (before: the bad
    /// bytes silently became U+FFFD).
    func testHuggingFaceDirectoryFiles() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let r = try runTool("convert", [tiny, "--to", "hf", "-o", path("hf"), "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        try Data([0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]).write(to: URL(fileURLWithPath: path("hf/tokenizer.json")))
        try expectNamed("convert", [path("hf"), "-o", path("out.st"), "--quiet"], bad: path("hf/tokenizer.json"),
                        message: "not valid UTF-8", output: path("out.st"))
        try FileManager.default.removeItem(atPath: path("hf/tokenizer.json"))
        try FileManager.default.removeItem(atPath: path("hf/config.json"))
        try FileManager.default.createDirectory(atPath: path("hf/config.json"), withIntermediateDirectories: false)
        try expectNamed("convert", [path("hf"), "-o", path("out.st"), "--quiet"], status: 66, bad: path("hf/config.json"),
                        message: "is a directory, not a file", output: path("out.st"))
    }

    /// An empty HellaSwag file (before: "DATA/tasks/hellaswag: no items", a folder, not the file).
    func testEmptyHellaSwagFile() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        // A model whose tokenizer loads: GPT-2's (the ids are never scored).
        let vocab = Fixtures.data("tokenizers/ggml-vocab-gpt-2.gguf").path
        let t = try runTool("tokenize", ["--model", vocab, "--write-json", path("gpt2.json")])
        XCTAssertEqual(t.status, 0, t.stderr)
        let json = try String(contentsOfFile: path("gpt2.json"), encoding: .utf8)
        try copy(tiny, to: path("model.st")) { $0["tokenizer"] = json }
        let task = path("data/tasks/hellaswag/hellaswag_val_full.txt.zst")
        try FileManager.default.createDirectory(atPath: path("data/tasks/hellaswag"), withIntermediateDirectories: true)
        XCTAssertTrue(FileManager.default.createFile(atPath: task, contents: Data()))
        try expectNamed("evaluate", ["--model", path("model.st"), "--tasks", "hellaswag", "--json", "--quiet"], bad: task,
                        message: "no items (an empty file)", output: nil, environment: ["PRUNEKIT_DATA": path("data")])
    }

    /// A shard index beyond the shard count (before: "shard indices [1, 2] are not all below the
    /// shard count 2", no file).
    func testMergeShardOutOfRange() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try writeTokenWindows(path("w.st"), N: 4, T: 8, vocabulary: 97, seed: 1)
        // 4 windows make one batch: shard 1 of 2 holds them all.
        let c = try runTool("calibrate", ["--model", tiny, "--tokens", path("w.st"), "--shard", "1/2", "-o", path("s1.st"), "--quiet"])
        XCTAssertEqual(c.status, 0, c.stderr)
        try copy(path("s1.st"), to: path("s2.st")) { $0["shards"] = "2" }
        try expectNamed("calibrate", ["merge", path("s1.st"), path("s2.st"), "-o", path("m.st"), "--quiet"], bad: path("s2.st"),
                        message: "shard 2 is not one of the 2 shards (0…1)", output: path("m.st"))
    }

    /// What `finetune` refuses about its data once read: no example, none with a position to learn
    /// (before: the trainer's message alone), and --budget-by statistics without usable importances
    /// (before: "block importances must be finite, ≥ 0 and not all 0").
    func testFinetuneData() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let base = ["--model", tiny, "--batch", "4", "--micro-batch", "2", "--steps", "1", "--quiet"]
        try writeTokenWindows(path("empty.st"), N: 0, T: 16, vocabulary: 97, seed: 1)
        try expectNamed("finetune", base + ["--tokens", path("empty.st"), "-o", path("o1.st")], bad: path("empty.st"),
                        message: "the data gives no training example", output: path("o1.st"))
        // Windows of one token: nothing follows any position.
        try writeTokenWindows(path("one.st"), N: 8, T: 1, vocabulary: 97, seed: 1)
        try expectNamed("finetune", base + ["--tokens", path("one.st"), "-o", path("o2.st")], bad: path("one.st"),
                        message: "no training example has a position to learn", output: path("o2.st"))

        try writeTokenWindows(path("w.st"), N: 8, T: 16, vocabulary: 97, seed: 1)
        let c = try runTool("calibrate", ["--model", tiny, "--tokens", path("w.st"), "-o", path("stats.st"), "--quiet"])
        XCTAssertEqual(c.status, 0, c.stderr)
        let stats = try TensorFile(path: path("stats.st"))
        let writer = try TensorFileWriter(path: path("flat.st"), entries: stats.header.entries, metadata: stats.metadata)
        try writer.complete {
            for e in stats.header.entries {
                if e.name.hasSuffix(".block.angular_sum") {
                    try writer.write(e.name, doubles: [Double](repeating: 0, count: e.elementCount))
                } else {
                    try stats.withBytes(e.name) { try writer.write(e.name, bytes: $0) }
                }
            }
        }
        try expectNamed("finetune", base + ["--tokens", path("w.st"), "--budget-by", path("flat.st"), "-o", path("o3.st")],
                        bad: path("flat.st"), message: "block importances must be finite, ≥ 0 and not all 0", output: path("o3.st"))
    }

    /// A built-in dataset too short for one window names its file beside the dataset (before:
    /// "wikitext2: 3 tokens, fewer than one window of 64").
    func testBuiltInDatasetTooShort() throws {
        let dir = try Fixtures.temporaryDirectory()
        let raw = dir.appendingPathComponent("wikitext-2-raw/wiki.test.raw")
        try FileManager.default.createDirectory(at: raw.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data("hello world\n".utf8).write(to: raw)
        let out = dir.appendingPathComponent("tokens.st").path
        try expectNamed("evaluate", ["--model", try Fixtures.requireModel(), "--ppl", "wikitext2", "--seqlen", "64",
                                     "--dump-tokens", out, "--quiet"],
                        bad: "wikitext2 (\(raw.path))", message: "tokens, fewer than one window of 64", output: out,
                        environment: ["PRUNEKIT_DATA": dir.path])
    }

    /// Cases that already named their file, kept so: a missing model, a truncated model, a bad
    /// config.json, a file of the wrong kind for each artifact, a bad JSONL line, a truncated GGUF,
    /// token ids outside the vocabulary, a model without a tokenizer.
    func testAlreadyNamed() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let out = path("out.st")
        try writeTokenWindows(path("w.st"), N: 2, T: 8, vocabulary: 97, seed: 1)
        try writeTokenWindows(path("big.st"), N: 2, T: 8, vocabulary: 200, seed: 1)
        let model = try Data(contentsOf: URL(fileURLWithPath: tiny))
        try model.prefix(1000).write(to: URL(fileURLWithPath: path("truncated.st")))
        try FileManager.default.createDirectory(atPath: path("hf"), withIntermediateDirectories: false)
        try Data("{\"model_type\": \"llama\",".utf8).write(to: URL(fileURLWithPath: path("hf/config.json")))
        try Data("{\"text\": \"a\"}\n{\"text\": \n".utf8).write(to: URL(fileURLWithPath: path("bad.jsonl")))
        let gguf = try Data(contentsOf: Fixtures.data("tokenizers/ggml-vocab-gpt-2.gguf"))
        try gguf.prefix(200).write(to: URL(fileURLWithPath: path("truncated.gguf")))
        let cases: [(tool: String, args: [String], status: Int32, bad: String, message: String)] = [
            ("evaluate", ["--model", path("missing.st"), "--tokens", path("w.st"), "--quiet"], 66, path("missing.st"), "no such file"),
            ("convert", [path("truncated.st"), "-o", out, "--quiet"], 65, path("truncated.st"), "truncated"),
            ("convert", [path("hf"), "-o", out, "--quiet"], 65, path("hf/config.json"), "not valid JSON"),
            ("convert", [path("truncated.gguf"), "-o", out, "--quiet"], 65, path("truncated.gguf"), "corrupt or truncated file"),
            ("slice", ["--model", tiny, "--plan", tiny, "-o", out, "--quiet"], 65, tiny, "not a plan file"),
            ("allocate", ["--scores", tiny, "--ratio", "0.2", "--structure", "UL-UM", "-o", out, "--quiet"], 65, tiny,
             "not a scores file"),
            ("score", ["--model", tiny, "--stats", tiny, "--metric", "flap", "-o", out, "--quiet"], 65, tiny, "not a statistics file"),
            ("calibrate", ["--model", tiny, "--jsonl", path("bad.jsonl"), "--samples", "1", "--seqlen", "4", "-o", out, "--quiet"],
             65, path("bad.jsonl") + ":2", "invalid JSON"),
            ("calibrate", ["--model", tiny, "--tokens", path("big.st"), "-o", out, "--quiet"], 65, path("big.st"),
             "outside the vocabulary (97)"),
            ("evaluate", ["--model", tiny, "--tokens", tiny, "--quiet"], 65, tiny, "no integer tensor 'tokens'"),
            ("tokenize", ["--model", tiny, "--write-json", out], 65, tiny, "carries no tokenizer"),
        ]
        for c in cases {
            try expectNamed(c.tool, c.args, status: c.status, bad: c.bad, message: c.message, output: out)
        }
    }
}
