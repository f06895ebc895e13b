import Foundation
import LlamaModel
import TensorIO
import TestSupport
import XCTest

/// Issue 18's hostile inputs through the binaries: each gives one line on stderr naming the
/// problem, its documented exit code, and writes nothing.
final class HardeningTests: XCTestCase {
    let tiny = Fixtures.url("model/tiny_uniform.safetensors").path

    func expectRefusal(_ tool: String, _ arguments: [String], status: Int32, message: String, output: String?,
                       stdin: Data? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try runTool(tool, arguments, stdin: stdin)
        XCTAssertEqual(r.status, status, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(message), r.stderr, file: file, line: line)
        if status != 64 { XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr, file: file, line: line) }
        if let output { XCTAssertFalse(FileManager.default.fileExists(atPath: output), "\(output) written", file: file, line: line) }
    }

    /// Counts read from a file are bounded before anything is allocated from them.
    func testAbsurdLayerCountsAndTokenIDs() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        // A GGUF claiming 2³² − 1 blocks.
        let gguf = path("blocks.gguf")
        let writer = try GGUFWriter(path: gguf, metadata: [
            ("general.architecture", .string("llama")), ("llama.block_count", .uint32(4_294_967_295)),
            ("llama.embedding_length", .uint32(64)), ("llama.attention.head_count", .uint32(4)),
            ("llama.feed_forward_length", .uint32(128)), ("llama.context_length", .uint32(128)),
        ], tensors: [.init(name: "token_embd.weight", shape: [100, 64], type: .F32)])
        try writer.complete { try writer.write("token_embd.weight", [Float](repeating: 0, count: 6400)) }
        try expectRefusal("convert", [gguf, "-o", path("a.st")], status: 65,
                          message: "blocks.gguf: llama.block_count must be in 1…1024, got 4294967295", output: path("a.st"))
        // A Hugging Face config with as many layers, and one whose bos_token_id is outside the vocabulary.
        for (name, key, value, message) in [
            ("layers", "num_hidden_layers", "4294967295", "num_hidden_layers must be in 1…1024, got 4294967295"),
            ("bos", "bos_token_id", "4294967295", "bos_token_id 4294967295 is outside the vocabulary (100)"),
        ] {
            let hf = dir.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: hf, withIntermediateDirectories: true)
            var config: [String: Any] = ["model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                         "num_hidden_layers": 2, "num_attention_heads": 4, "rms_norm_eps": 1e-5,
                                         "vocab_size": 100]
            config[key] = Int(value)!
            try JSONSerialization.data(withJSONObject: config).write(to: hf.appendingPathComponent("config.json"))
            try expectRefusal("convert", [hf.path, "-o", path("\(name).st")], status: 65, message: message,
                              output: path("\(name).st"))
        }
        try expectRefusal("evaluate", ["--model", tiny, "--ppl", "wikitext2", "--threads", "3000000000"], status: 64,
                          message: "--threads must be in 1…1024", output: nil)
    }

    /// Windows whose hidden states cannot fit in memory are refused before anything is drawn.
    func testCalibrationWindowsBeyondMemory() throws {
        let dir = try Fixtures.temporaryDirectory()
        let out = dir.appendingPathComponent("s.st").path
        let text = Fixtures.data("wikitext-2-raw/wiki.test.raw").path
        try expectRefusal("calibrate", ["--model", tiny, "--text", text, "--samples", "9223372036854775807", "--seqlen", "2",
                                        "-o", out], status: 64,
                          message: "--samples 9223372036854775807 × --seqlen 2 need more than 2⁶³ bytes of hidden states",
                          output: out)
        try expectRefusal("calibrate", ["--model", tiny, "--text", text, "--samples", "1000000000000", "--seqlen", "64",
                                        "-o", out], status: 64,
                          message: "--samples 1000000000000 × --seqlen 64 need 16384 TB of hidden states", output: out)
    }

    /// A model given as a named pipe is read once as a stream (a GGUF refused: it needs seeks);
    /// a stream missing the last bytes of its zstd frame is refused, not accepted at the last tensor.
    func testPipesAndTruncatedStreams() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try writeTokenWindows(path("w.st"), N: 4, T: 16, vocabulary: 97, seed: 1)
        let direct = try runTool("evaluate", ["--model", tiny, "--tokens", path("w.st"), "--json", "--quiet"])
        XCTAssertEqual(direct.status, 0, direct.stderr)
        let compressed = path("m.st.zst")
        let c = try runTool("convert", [tiny, "-o", compressed, "--quiet"])
        XCTAssertEqual(c.status, 0, c.stderr)
        let fifo = path("fifo")
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: compressed))
        let feeder = Thread { try? bytes.write(to: URL(fileURLWithPath: fifo)) }
        feeder.start()
        let piped = try runTool("evaluate", ["--model", fifo, "--tokens", path("w.st"), "--json", "--quiet"])
        XCTAssertEqual(piped.status, 0, piped.stderr)
        func nll(_ r: ToolResult) throws -> Double? {
            (try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any])?["nll"] as? Double
        }
        XCTAssertEqual(try nll(piped), try nll(direct))
        XCTAssertNotNil(try nll(direct))
        for cut in 1...3 {
            try expectRefusal("evaluate", ["--model", "-", "--tokens", path("w.st"), "--json", "--quiet"], status: 65,
                              message: "<stdin>: truncated zstd frame", output: nil, stdin: bytes.dropLast(cut))
        }
        var corrupt = bytes
        corrupt[corrupt.count - 1] ^= 0xFF  // the checksum's last byte
        try expectRefusal("evaluate", ["--model", "-", "--tokens", path("w.st"), "--json", "--quiet"], status: 65,
                          message: "<stdin>: zstd checksum mismatch", output: nil, stdin: corrupt)
        let gguf = Fixtures.data("tokenizers/ggml-vocab-gpt-2.gguf").path
        try expectRefusal("evaluate", ["--model", "-", "--tokens", path("w.st")], status: 65,
                          message: "<stdin>: a GGUF file is read with seeks", output: nil,
                          stdin: try Data(contentsOf: URL(fileURLWithPath: gguf)))
    }

    /// A copy of tensor file `source` with `change` applied to its tensors (as F64/F32/I64 arrays).
    func rewrite(_ source: String, to path: String, _ change: (String, inout [Double]) -> Void) throws {
        let file = try TensorFile(path: source)
        let writer = try TensorFileWriter(path: path, entries: file.header.entries, metadata: file.metadata)
        try writer.complete {
            for e in file.header.entries {
                switch e.dtype {
                case .F64:
                    var v = try file.doubles(e.name)
                    change(e.name, &v)
                    try writer.write(e.name, doubles: v)
                case .F32:
                    var v = try file.floats(e.name).map(Double.init)
                    change(e.name, &v)
                    try writer.write(e.name, floats: v.map(Float.init))
                case .I64:
                    var v = try file.integers(e.name).map(Double.init)
                    change(e.name, &v)
                    try writer.write(e.name, integers: v.map { Int($0) })
                default:
                    try file.withBytes(e.name) { try writer.write(e.name, bytes: $0) }
                }
            }
        }
    }

    /// NaN or empty statistics, NaN weights, plans that miss their ratio, unreadable text: refused.
    func testSemanticChecks() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try writeTokenWindows(path("w.st"), N: 6, T: 16, vocabulary: 97, seed: 2)
        func ok(_ tool: String, _ args: [String]) throws {
            let r = try runTool(tool, args + ["--quiet"])
            XCTAssertEqual(r.status, 0, "\(tool): \(r.stderr)")
        }
        try ok("calibrate", ["--model", tiny, "--tokens", path("w.st"), "-o", path("stats.st")])
        try ok("score", ["--model", tiny, "--stats", path("stats.st"), "--metric", "flap", "-o", path("scores.st")])
        try ok("allocate", ["--scores", path("scores.st"), "--ratio", "0.2", "--structure", "UL-UM", "-o", path("plan.st")])
        try ok("slice", ["--model", tiny, "--plan", path("plan.st"), "-o", path("sliced.st")])
        try rewrite(path("stats.st"), to: path("nan.st")) { name, v in
            if name == "model.layers.1.mlp.down_proj.input.sum" { v[3] = .nan }
        }
        try rewrite(path("stats.st"), to: path("empty.st")) { name, v in
            if name == "model.layers.0.mlp.down_proj.input.count" { v = v.map { _ in 0 } }
        }
        try rewrite(path("stats.st"), to: path("angular.st")) { name, v in
            if name == "model.layers.0.block.angular_sum" { v[0] = .nan }
        }
        // Statistics one channel narrower than the model: refused by the width check, not read past the end.
        let narrowFile = try TensorFile(path: path("stats.st"))
        let narrowEntries = narrowFile.header.entries.map { e -> TensorEntry in
            e.name == "model.layers.0.mlp.down_proj.input.fluctuation" ? TensorEntry(name: e.name, dtype: e.dtype, shape: [e.shape[0] - 1]) : e
        }
        let narrowWriter = try TensorFileWriter(path: path("narrow.st"), entries: narrowEntries, metadata: narrowFile.metadata)
        try narrowWriter.complete {
            for e in narrowEntries {
                try narrowFile.withBytes(e.name) { try narrowWriter.write(e.name, bytes: UnsafeRawBufferPointer(rebasing: $0[0..<e.byteCount])) }
            }
        }
        try expectRefusal("score", ["--model", tiny, "--stats", path("narrow.st"), "--metric", "flap", "--quiet", "-o", path("s0.st")],
                          status: 65, message: "narrow.st: layer 0 statistics at down_proj have 95 channels, the model 96",
                          output: path("s0.st"))
        let restore = ["--model", path("sliced.st"), "--dense", tiny, "--plan", path("plan.st"), "--method", "bias", "--quiet"]
        try expectRefusal("restore", restore + ["--stats", path("nan.st"), "-o", path("r1.st")], status: 65,
                          message: "nan.st: model.layers.1.mlp.down_proj.input.sum holds nan at element 3 (layer 1)",
                          output: path("r1.st"))
        try expectRefusal("restore", restore + ["--stats", path("empty.st"), "-o", path("r2.st")], status: 65,
                          message: "empty.st: model.layers.0.mlp.down_proj.input.count is 0: layer 0 saw no tokens",
                          output: path("r2.st"))
        try expectRefusal("score", ["--model", tiny, "--stats", path("angular.st"), "--metric", "cfsp", "--quiet", "-o", path("s1.st")],
                          status: 65, message: "angular.st: model.layers.0.block.angular_sum holds nan (layer 0)",
                          output: path("s1.st"))
        let allocate = ["--scores", path("scores.st"), "--structure", "UL-UM"]
        try expectRefusal("allocate", allocate + ["--ratio", "0.5", "--min-keep", "100000", "-o", path("p1.st")], status: 64,
                          message: "the plan removes 0.0000 of the decoder-layer parameters for 0.5000 asked", output: path("p1.st"))
        try ok("allocate", allocate + ["--ratio", "0.5", "--min-keep", "100000", "--allow-ratio-miss", "-o", path("p2.st")])
        // The same miss in a sequential run: refused before the first layer runs.
        try expectRefusal("calibrate", ["--model", tiny, "--tokens", path("w.st"), "--sequential", "--metric", "wanda-sp",
                                        "--ratio", "0.5", "--structure", "UL-UM", "--min-keep", "100000", "--quiet", "-o", path("c3.st")],
                          status: 64, message: "the plan removes 0.0000 of the decoder-layer parameters for 0.5000 asked",
                          output: path("c3.st"))
        try expectRefusal("allocate", allocate + ["--ratio", "0.2", "--round", "1000000000", "-o", path("p3.st")], status: 64,
                          message: "--round must be at most 16777216", output: path("p3.st"))
        try expectRefusal("allocate", ["--scores", path("scores.st"), "--ratio", "0.2", "--blocks", "angular", "--prune", "mlp",
                                       "--angular-a", "nan", "-o", path("p4.st")], status: 64,
                          message: "--angular-a must be a finite number", output: path("p4.st"))
        try expectRefusal("allocate", allocate + ["--ratio", "0.2", "--plot", path("no/such/plan.svg"), "-o", path("p5.st")],
                          status: 64, message: "--plot \(path("no/such/plan.svg")): no such directory", output: path("p5.st"))
        // NaN weights: refused by convert (named) and by evaluate (the loss), instead of an encoding error.
        try rewrite(tiny, to: path("nanmodel.st")) { name, v in
            if name == "model.layers.1.mlp.up_proj.weight" { v[131] = .nan }
        }
        try expectRefusal("convert", [path("nanmodel.st"), "-o", path("c.st"), "--quiet"], status: 65,
                          message: "nanmodel.st: model.layers.1.mlp.up_proj.weight holds nan at element 131", output: path("c.st"))
        try expectRefusal("evaluate", ["--model", path("nanmodel.st"), "--tokens", path("w.st"), "--json", "--quiet"],
                          status: 65, message: "nanmodel.st: the loss of window 0 is nan", output: nil)
        // Invalid UTF-8 in JSONL is refused as in plain text, not turned into U+FFFD.
        try Data("{\"text\": \"good\"}\n{\"text\": \"bad \u{1}".utf8 + [0xFF, 0xFE] + Data("\"}\n".utf8))
            .write(to: URL(fileURLWithPath: path("bad.jsonl")))
        try expectRefusal("calibrate", ["--model", tiny, "--jsonl", path("bad.jsonl"), "--samples", "1", "--seqlen", "4",
                                        "-o", path("c2.st")], status: 65, message: "bad.jsonl:2: the line is not valid UTF-8",
                          output: path("c2.st"))
    }

    /// Configuration keys that change the computation are honoured or refused: a sliding window
    /// caps the context (within it, sliding-window attention is causal attention), an activation
    /// other than SiLU is refused.
    func testSlidingWindowAndActivation() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let source = try Model.open(tiny)
        func hf(_ name: String, _ extra: [String: Any]) throws -> String {
            let d = dir.appendingPathComponent(name)
            let c = source.config
            let e = try runTool("convert", [tiny, "--to", "hf", "-o", d.path, "--quiet"])
            XCTAssertEqual(e.status, 0, e.stderr)
            let url = d.appendingPathComponent("config.json")
            var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
            for (k, v) in extra { config[k] = v }
            XCTAssertEqual(config["num_hidden_layers"] as? Int, c.numLayers)
            try JSONSerialization.data(withJSONObject: config).write(to: url)
            return d.path
        }
        let mistral = try hf("mistral", ["model_type": "mistral", "sliding_window": 16])
        try writeTokenWindows(path("w16.st"), N: 2, T: 16, vocabulary: 97, seed: 5)
        try writeTokenWindows(path("w17.st"), N: 2, T: 17, vocabulary: 97, seed: 5)
        let within = try runTool("evaluate", ["--model", mistral, "--tokens", path("w16.st"), "--json", "--quiet"])
        XCTAssertEqual(within.status, 0, within.stderr)
        let full = try runTool("evaluate", ["--model", tiny, "--tokens", path("w16.st"), "--json", "--quiet"])
        XCTAssertEqual(within.stdout.count > 0, true)
        func nll(_ r: ToolResult) throws -> Double? {
            (try JSONSerialization.jsonObject(with: r.stdout) as? [String: Any])?["nll"] as? Double
        }
        XCTAssertEqual(try nll(within), try nll(full))
        try expectRefusal("evaluate", ["--model", mistral, "--tokens", path("w17.st"), "--json", "--quiet"], status: 64,
                          message: "windows of 17 tokens exceed the model's context of 16", output: nil)
        // Qwen2 applies its window only with use_sliding_window.
        let qwenOff = try hf("qwen-off", ["model_type": "qwen2", "sliding_window": 16, "use_sliding_window": false,
                                          "tie_word_embeddings": source.config.tieWordEmbeddings])
        let off = try runTool("evaluate", ["--model", qwenOff, "--tokens", path("w17.st"), "--json", "--quiet"])
        XCTAssertEqual(off.status, 0, off.stderr)
        let gelu = try hf("gelu", ["hidden_act": "gelu"])
        try expectRefusal("convert", [gelu, "-o", path("g.st"), "--quiet"], status: 65,
                          message: "hidden_act 'gelu' is not supported (silu)", output: path("g.st"))
    }

    /// What a writer killed by SIGKILL leaves (`.NAME.tmp-PID-XXXXXX`) is removed by the next run
    /// writing that output; a live process's temporary is not touched.
    func testStaleTemporariesAreRemoved() throws {
        let dir = try Fixtures.temporaryDirectory()
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let stale = dir.appendingPathComponent(".m.st.tmp-\(gone.processIdentifier)-a1b2c3").path
        let live = dir.appendingPathComponent(".m.st.tmp-\(getpid())-d4e5f6").path
        let other = dir.appendingPathComponent(".n.st.tmp-\(gone.processIdentifier)-a1b2c3").path
        for p in [stale, live, other] { XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data(count: 1024))) }
        let r = try runTool("convert", [tiny, "-o", dir.appendingPathComponent("m.st").path, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
        XCTAssertTrue(FileManager.default.fileExists(atPath: live))
        XCTAssertTrue(FileManager.default.fileExists(atPath: other))  // another output's
    }

    /// A directory output (finetune --adapters-only): a killed writer's `.DIR.tmp-PID-XXXXXX` folder
    /// is removed by the next run; a previous version it had set aside (`….old`) comes back when the
    /// output is missing (killed between the two renames), and is removed when the output is there.
    func testStaleDirectoryTemporariesAreRemovedOrRestored() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ n: String) -> String { dir.appendingPathComponent(n).path }
        let fm = FileManager.default
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let pid = gone.processIdentifier
        try writeTokenWindows(path("w.st"), N: 8, T: 16, vocabulary: 97, seed: 3)
        let finetune = ["--model", tiny, "--tokens", path("w.st"), "--batch", "2", "--micro-batch", "2", "--steps", "1", "--adapters-only", "--quiet"]

        // Killed while writing: a half-written folder beside an existing output.
        try fm.createDirectory(atPath: path(".peft.tmp-\(pid)-abc123"), withIntermediateDirectories: false)
        XCTAssertTrue(fm.createFile(atPath: path(".peft.tmp-\(pid)-abc123/adapter_model.safetensors"), contents: Data(count: 100)))
        let live = path(".peft.tmp-\(getpid())-def456")
        try fm.createDirectory(atPath: live, withIntermediateDirectories: false)
        var r = try runTool("finetune", finetune + ["-o", path("peft")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(fm.fileExists(atPath: path(".peft.tmp-\(pid)-abc123")))
        XCTAssertTrue(fm.fileExists(atPath: live))  // a running process's
        try fm.removeItem(atPath: live)

        // Killed between the renames: the output missing, its previous version set aside.
        try fm.moveItem(atPath: path("peft"), toPath: path(".peft.tmp-\(pid)-ghi789.old"))
        try writeDirectoryAtomically(path("other")) { _ in }  // another output's call leaves it alone
        XCTAssertTrue(fm.fileExists(atPath: path(".peft.tmp-\(pid)-ghi789.old")))
        struct Stop: Error {}
        XCTAssertThrowsError(try writeDirectoryAtomically(path("peft")) { _ in throw Stop() })  // cleans up, then fails
        XCTAssertTrue(fm.fileExists(atPath: path("peft/adapter_config.json")), "the set-aside version is back")
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".peft") }, [])

        // Set aside with the output present (killed after the second rename): removed.
        try fm.createDirectory(atPath: path(".peft.tmp-\(pid)-jkl012.old"), withIntermediateDirectories: false)
        r = try runTool("finetune", finetune + ["-o", path("peft")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".peft") }, [])
        XCTAssertEqual(Set(try fm.contentsOfDirectory(atPath: path("peft"))), ["adapter_model.safetensors", "adapter_config.json"])
    }

    /// A full disk (a 200 KB tmpfs, where the machine lets the tests mount one): one line, exit 74,
    /// and no partial file or directory left.
    func testFullDiskLeavesNothing() throws {
        let dir = try Fixtures.temporaryDirectory().appendingPathComponent("small")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=200k", "tmpfs", dir.path]
        mount.standardError = FileHandle.nullDevice
        guard (try? mount.run()) != nil else { throw XCTSkip("no /bin/mount") }
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else { throw XCTSkip("tmpfs cannot be mounted here (not privileged)") }
        defer {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = [dir.path]
            try? umount.run()
            umount.waitUntilExit()
        }
        try expectRefusal("convert", [tiny, "--to", "hf", "-o", dir.appendingPathComponent("hf").path, "--quiet"],
                          status: 74, message: "No space left on device", output: dir.appendingPathComponent("hf").path)
        try expectRefusal("convert", [tiny, "-o", dir.appendingPathComponent("m.st").path, "--quiet"],
                          status: 74, message: "No space left on device", output: dir.appendingPathComponent("m.st").path)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])
    }

    /// A small file that decompresses to a gigabyte (zeros after the last tensor) is refused once
    /// it runs past what its header announces, file or stream, without being read to its end.
    func testDecompressionBomb() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try writeTokenWindows(path("w.st"), N: 2, T: 16, vocabulary: 97, seed: 5)
        let bomb = path("bomb.st.zst")
        let zstd = Process()
        zstd.executableURL = URL(fileURLWithPath: "/bin/sh")
        zstd.arguments = ["-c", "(cat \"$0\"; head -c 1073741824 /dev/zero) | zstd -q -3 -o \"$1\"", tiny, bomb]
        try zstd.run()
        zstd.waitUntilExit()
        guard zstd.terminationStatus == 0 else { throw XCTSkip("no zstd command") }
        XCTAssertLessThan(try FileManager.default.attributesOfItem(atPath: bomb)[.size] as! Int, 1 << 20)
        let start = Date()
        try expectRefusal("evaluate", ["--model", bomb, "--tokens", path("w.st"), "--json", "--quiet"], status: 65,
                          message: "trailing bytes after the last tensor (the tensors need 304224 bytes in all); not read further",
                          output: nil)
        try expectRefusal("evaluate", ["--model", "-", "--tokens", path("w.st"), "--json", "--quiet"], status: 65,
                          message: "<stdin>: at least 1048576 trailing bytes after the last tensor", output: nil,
                          stdin: try Data(contentsOf: URL(fileURLWithPath: bomb)))
        XCTAssertLessThan(Date().timeIntervalSince(start), 2, "the gigabyte was read")
    }

    /// Every stage run twice with the same inputs, seed and thread count writes the same bytes
    /// (the same command line each time, so that the recorded arguments agree too).
    func testEveryStageIsDeterministic() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try writeTokenWindows(path("w.st"), N: 8, T: 16, vocabulary: 97, seed: 4)
        let fm = FileManager.default
        func twice(_ tool: String, _ args: [String], _ name: String) throws {
            let files = name == "hf" ? ["/model.safetensors", "/config.json"] : [""]
            var first: [Data] = []
            for run in 0..<2 {
                let r = try runTool(tool, args + ["-o", path(name), "--threads", "2", "--quiet"])
                XCTAssertEqual(r.status, 0, "\(tool): \(r.stderr)")
                let bytes = try files.map { try Data(contentsOf: URL(fileURLWithPath: path(name) + $0)) }
                if run == 0 {
                    first = bytes
                    if name == "hf" { try fm.removeItem(atPath: path(name)) }
                } else {
                    XCTAssertEqual(bytes, first, "\(tool) → \(name)")
                }
            }
        }
        try twice("convert", [tiny], "model.st.zst")
        try twice("calibrate", ["--model", path("model.st.zst"), "--tokens", path("w.st"), "--gram", "o_proj,down_proj"], "stats.st")
        try twice("calibrate", ["--model", path("model.st.zst"), "--tokens", path("w.st"), "--gradients", "first"], "grads.st")
        try twice("score", ["--model", path("model.st.zst"), "--stats", path("stats.st"), "--metric", "fasp"], "scores.st")
        try twice("allocate", ["--scores", path("scores.st"), "--ratio", "0.3", "--structure", "UL-UM", "--attention-unit", "vo"],
                  "plan.st")
        try twice("slice", ["--model", path("model.st.zst"), "--plan", path("plan.st")], "sliced.st")
        try twice("restore", ["--model", path("sliced.st"), "--dense", path("model.st.zst"), "--stats", path("stats.st"),
                              "--plan", path("plan.st"), "--method", "lsq"], "restored.st")
        try twice("finetune", ["--model", path("restored.st"), "--tokens", path("w.st"), "--steps", "3", "--batch", "4",
                               "--micro-batch", "2", "--lr", "0.01"], "tuned.st")
        try twice("convert", [path("tuned.st"), "--to", "hf", "--pad-values"], "hf")
    }

    /// The fuzz targets' seed corpora (Tests/Fuzz/Corpus: valid and handcrafted files, and every input a
    /// fuzzing run found crashing) replayed through the same targets: each ends in a value or an error.
    func testFuzzCorpusReplays() throws {
        let corpus = Fixtures.packageRoot.appendingPathComponent("Tests/Fuzz/Corpus")
        let targets = try FileManager.default.contentsOfDirectory(atPath: corpus.path).sorted()
        XCTAssertEqual(targets.count, 9)
        for target in targets {
            let folder = corpus.appendingPathComponent(target)
            let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
                .map { folder.appendingPathComponent($0).path }
            let r = try runTool("prunekit-fuzz", [target] + files)
            XCTAssertEqual(r.status, 0, "\(target): \(r.stderr)")
            XCTAssertTrue(r.stdoutText.contains("\(files.count) inputs, no crash"), r.stdoutText)
        }
    }
}
