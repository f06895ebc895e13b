import Foundation
import LlamaModel
import TensorIO
import TestSupport
import XCTest

/// calibrate --gradients and score --metric taylor through the binaries, and their refusals: one
/// line on stderr, a non-zero status, no output file.
final class GradientToolTests: XCTestCase {
    func testTaylorThroughTheToolsAndItsRefusals() throws {
        let dir = try Fixtures.temporaryDirectory()
        let model = Fixtures.url("model/tiny_uniform.safetensors").path
        let tokens = dir.appendingPathComponent("w.st").path
        try writeTokenWindows(tokens, N: 4, T: 12, vocabulary: 97, seed: 9)
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        func calibrate(_ out: String, _ extra: [String], model m: String = model) throws -> ToolResult {
            try runTool("calibrate", ["--model", m, "--tokens", tokens, "-o", out, "--quiet"] + extra)
        }
        for (name, extra) in [("plain.st", [String]()), ("first.st", ["--gradients", "first"]),
                              ("second.st", ["--gradients", "second", "--grad-dtype", "bf16"])] {
            let r = try calibrate(path(name), extra)
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let second = try TensorFile(path: path("second.st"))
        XCTAssertEqual(second.metadata["gradients"], "second")
        XCTAssertEqual(second.header.entry("model.layers.1.mlp.down_proj.weight.grad_sq_sum")?.dtype, .BF16)
        XCTAssertEqual(second.header.entry("model.layers.1.mlp.down_proj.weight.grad_sq_sum")?.shape, [64, 96])
        XCTAssertEqual(try second.integers("lm_loss.count"), [44])
        for (stats, order) in [("first.st", "first"), ("second.st", "mix")] {
            let out = path("taylor-\(order).st")
            let r = try runTool("score", ["--model", model, "--stats", path(stats), "--metric", "taylor", "--order", order,
                                          "--granularity", "vector", "--reduce", "max", "-o", out, "--quiet"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual(try TensorFile(path: out).metadata["taylor"], "order=\(order);granularity=vector;reduce=max")
        }

        let fused = path("hywia.st")
        let h = try runTool("score", ["--model", model, "--stats", path("first.st"), "--metric", "hywia", "--fusion", "equal",
                                      "-o", fused, "--quiet"])
        XCTAssertEqual(h.status, 0, h.stderr)
        XCTAssertEqual(try TensorFile(path: fused).metadata["hywia"], "fusion=equal;temperature=1.0;normalise=rank")
        let byMean = try runTool("score", ["--model", model, "--stats", path("first.st"), "--metric", "hywia", "--normalise", "mean",
                                           "-o", fused, "--quiet"])
        XCTAssertEqual(byMean.status, 0, byMean.stderr)
        XCTAssertEqual(try TensorFile(path: fused).metadata["hywia"], "fusion=adaptive;temperature=1.0;normalise=mean")
        let bad = try runTool("score", ["--model", model, "--stats", path("first.st"), "--metric", "hywia", "--normalise", "median",
                                        "-o", path("refused.st"), "--quiet"])
        XCTAssertEqual(bad.status, 64, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("--normalise mean, max or rank"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("refused.st")))

        // Gradients of another loss: the same file with its loss renamed.
        let file = try TensorFile(path: path("first.st"))
        var meta = file.metadata
        meta["gradient_loss"] = "mean squared error"
        let writer = try TensorFileWriter(path: path("otherloss.st"), entries: file.header.entries, metadata: meta)
        for e in file.header.entries { try file.withBytes(e.name) { try writer.write(e.name, bytes: $0) } }
        try writer.finish()
        // A model whose weights hold a NaN: every gradient from its layer down is NaN.
        let source = try Model.open(model)
        let nanModel = path("nan.st")
        let w = try ModelWriter(path: nanModel, config: source.config, tensors: source.tensorNames.map { ($0, source.shape($0)!) },
                                dtype: { _ in .F32 }, tokenizerJSON: nil, metadata: [:])
        for name in source.tensorNames {
            var values = try source.floats(name)
            if name == "model.layers.1.mlp.up_proj.weight" { values[5] = .nan }
            try w.write(name, values)
        }
        try w.finish()

        let out = path("bad.st")
        let scoreCases: [([String], String)] = [
            (["--stats", path("plain.st")], "statistics without gradients; taylor needs calibrate --gradients first"),
            (["--stats", path("first.st"), "--order", "second"], "needs squared gradients; the statistics have first-order ones only (calibrate --gradients second)"),
            (["--stats", path("otherloss.st")], "gradients of another loss (mean squared error)"),
        ]
        for (args, message) in scoreCases {
            let r = try runTool("score", ["--model", model, "--metric", "taylor"] + args + ["-o", out, "--quiet"])
            XCTAssertEqual(r.status, 65, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message) && r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
        let calibrateCases: [([String], String, Int32, String)] = [
            (["--gradients", "first"], nanModel, 65, "of model.layers.0.self_attn.q_proj.weight is nan"),
            (["--gradients", "third"], model, 64, "--gradients must be first or second"),
            (["--gradients", "first", "--cache", path("cache")], model, 64, "not with --sequential, --cache or --from-cache"),
            (["--gradients", "first", "--sequential", "--metric", "wanda-sp", "--ratio", "0.2", "--structure", "UL-UM"], model, 64,
             "not with --sequential"),
        ]
        for (args, m, status, message) in calibrateCases {
            let r = try calibrate(out, args, model: m)
            XCTAssertEqual(r.status, status, "\(args): \(r.stderr)")
            // Usage errors (64) come with argument-parser's usage line; data errors are one line.
            XCTAssertTrue(r.stderr.contains(message) && (status == 64 || r.stderr.split(separator: "\n").count == 1),
                          "\(args): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
    }
}
