import Foundation
import LlamaModel
import TensorIO
import TestSupport
import XCTest

/// finetune through its binary: outputs (merged model, PEFT adapters, plot, checkpoint), rank 0
/// and zero steps writing the model unchanged, and its refusals — one line on stderr, a non-zero
/// status, no output.
final class FinetuneToolTests: XCTestCase {
    let model = Fixtures.url("model/tiny_uniform.safetensors").path

    func testOutputsAndUnchangedModels() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try writeTokenWindows(path("w.st"), N: 12, T: 16, vocabulary: 97, seed: 3)
        let common = ["--model", model, "--tokens", path("w.st"), "--batch", "4", "--micro-batch", "2", "--lr", "0.01",
                      "--quiet"]
        let r = try runTool("finetune", common + ["--steps", "4", "--eval-every", "2", "--eval-examples", "4",
                                                  "--checkpoint-every", "2", "--plot", path("loss.svg"), "-o", path("m.st")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        let source = try Model.open(model), merged = try Model.open(path("m.st"))
        XCTAssertNotEqual(try merged.floats(TensorNames.weight(0, .q)), try source.floats(TensorNames.weight(0, .q)))
        XCTAssertEqual(try merged.floats(TensorNames.inputNorm(0)), try source.floats(TensorNames.inputNorm(0)))
        XCTAssertNotEqual(try merged.fingerprint(), try source.fingerprint())
        XCTAssertTrue(try String(contentsOfFile: path("loss.svg"), encoding: .utf8).contains("<polyline"))
        XCTAssertEqual(try TensorFile(path: path("m.st.checkpoint")).metadata["step"], "4")

        // Resuming the finished run's checkpoint takes no step and writes the same adapters.
        let a = try runTool("finetune", common + ["--steps", "4", "--eval-every", "2", "--eval-examples", "4",
                                                  "--adapters-only", "-o", path("peft-a")])
        XCTAssertEqual(a.status, 0, a.stderr)
        let b = try runTool("finetune", common + ["--steps", "4", "--eval-every", "2", "--eval-examples", "4",
                                                  "--resume", path("m.st.checkpoint"), "--adapters-only", "-o", path("peft-b")])
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("peft-a/adapter_model.safetensors"))),
                       try Data(contentsOf: URL(fileURLWithPath: path("peft-b/adapter_model.safetensors"))))

        // Ranks by block importance (calibrate's angular statistics): PEFT's rank_pattern.
        let c = try runTool("calibrate", ["--model", model, "--tokens", path("w.st"), "-o", path("stats.st"), "--quiet"])
        XCTAssertEqual(c.status, 0, c.stderr)
        let g = try runTool("finetune", common + ["--steps", "2", "--budget-by", path("stats.st"), "--adapters-only",
                                                  "-o", path("peft-g")])
        XCTAssertEqual(g.status, 0, g.stderr)
        let config = try String(contentsOfFile: path("peft-g/adapter_config.json"), encoding: .utf8)
        XCTAssertTrue(config.contains("\"rank_pattern\":{\"model.layers."), config)

        // Rank 0, and zero steps: every tensor as it was, bit for bit, and the same fingerprint.
        for (name, extra) in [("r0.st", ["--rank", "0", "--steps", "3"]), ("s0.st", ["--steps", "0"])] {
            let z = try runTool("finetune", common + extra + ["-o", path(name)])
            XCTAssertEqual(z.status, 0, z.stderr)
            let out = try Model.open(path(name))
            XCTAssertEqual(out.tensorNames, source.tensorNames)
            for t in source.tensorNames {
                XCTAssertEqual(out.storageType(t), source.storageType(t), t)
                XCTAssertEqual(try out.floats(t).map(\.bitPattern), try source.floats(t).map(\.bitPattern), "\(name) \(t)")
            }
            XCTAssertEqual(try out.fingerprint(), try source.fingerprint())
        }
    }

    func testRefusals() throws {
        let dir = try Fixtures.temporaryDirectory()
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try writeTokenWindows(path("w.st"), N: 8, T: 16, vocabulary: 97, seed: 3)
        try writeTokenWindows(path("few.st"), N: 3, T: 16, vocabulary: 97, seed: 3)
        try writeTokenWindows(path("empty.st"), N: 0, T: 16, vocabulary: 97, seed: 3)
        try writeTokenWindows(path("big.st"), N: 8, T: 16, vocabulary: 200, seed: 3)
        let base = ["--model", model, "--batch", "4", "--micro-batch", "2", "--quiet"]
        // A checkpoint of this run, for the refusals of other runs.
        let ok = try runTool("finetune", base + ["--tokens", path("w.st"), "--steps", "2", "--checkpoint-every", "1",
                                                "--checkpoint", path("ck"), "-o", path("ok.st")])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let cases: [(args: [String], status: Int32, message: String)] = [
            (["--tokens", path("few.st"), "--steps", "1"], 65, "3 training examples (token windows) are fewer than one batch of 4"),
            (["--tokens", path("empty.st"), "--steps", "1"], 65, "the data gives no training example"),
            (["--tokens", path("big.st"), "--steps", "1"], 65, "is outside the vocabulary (97)"),
            (["--tokens", path("w.st"), "--steps", "2", "--eval-every", "1", "--eval-examples", "8"], 65, "leave none to train on"),
            (["--tokens", path("w.st"), "--steps", "2", "--lr", "0.02", "--resume", path("ck")], 65,
             "a checkpoint of another run: lr was 0.0001, now 0.02"),
            (["--tokens", path("few.st"), "--steps", "2", "--batch", "2", "--micro-batch", "1", "--resume", path("ck")], 65,
             "a checkpoint of a run on other data"),
            (["--tokens", path("w.st"), "--steps", "2", "--resume", path("w.st")], 65, "not a finetune checkpoint"),
            (["--text", path("w.st"), "--steps", "1"], 65, "the model has no tokenizer"),
            (["--tokens", path("w.st"), "--steps", "1", "--targets", "q,z"], 64, "unknown target 'z'"),
            (["--tokens", path("w.st"), "--steps", "1", "--epochs", "1"], 64, "exactly one of --steps and --epochs"),
            (["--tokens", path("w.st"), "--steps", "1", "--batch", "3"], 64, "a positive multiple of --micro-batch"),
            (["--tokens", path("w.st"), "--steps", "3", "--lr", "1e30", "--checkpoint-every", "1", "--checkpoint", path("ck-nan")],
             65, "training stopped"),
        ]
        for (i, c) in cases.enumerated() {
            let out = path("out\(i).st")
            let r = try runTool("finetune", base + c.args + ["-o", out])
            XCTAssertEqual(r.status, c.status, "\(c.args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(c.message), "\(c.args): \(r.stderr)")
            if c.status == 65 { XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr) }  // usage errors add the usage
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(c.args) left \(out)")
        }
        // The NaN run kept its last good checkpoint.
        let kept = try TensorFile(path: path("ck-nan"))
        XCTAssertEqual(kept.metadata["step"], "1")
        XCTAssertTrue(try kept.floats("adapters").allSatisfy(\.isFinite))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp") }
        XCTAssertEqual(leftovers, [])
    }
}
