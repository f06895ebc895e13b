import Foundation
import TensorIO
import TestSupport
import XCTest

/// LLM-Pruner's Taylor importance on the real gradients of SmolLM2-135M-Instruct (9 heads on 3 KV
/// heads, so k/v rows enter no channel's score) against an independent numpy implementation of its
/// TaylorImportance (scripts/reference/taylor_smollm2_reference.py): layers 0, 15 and 29, every
/// order × granularity × reduction, equal within 1e-6 relative. The gradients come from our
/// calibrate, run here with the command line the fixture records (2 C4 windows of 32 tokens), and
/// the scores from our score tool.
final class TaylorSmolLM2Tests: XCTestCase {
    func testScoresEqualTheNumpyReference() throws {
        #if DEBUG
        // Unoptimised tools take 8 minutes over this on 2 cores (about a minute in release; it passes in both).
        throw XCTSkip("SmolLM2's gradients and 30 score runs are too slow in a debug build; swift test -c release runs it")
        #else
        let modelPath = Fixtures.modelPath
        guard FileManager.default.fileExists(atPath: modelPath) else {
            throw XCTSkip("no SmolLM2 GGUF at \(modelPath): run scripts/fetch-model.sh")
        }
        let ref = try TensorFile(path: Fixtures.url("taylor/smollm2_scores.safetensors").path)
        let meta = ref.metadata
        let data = Fixtures.data(try XCTUnwrap(meta["data"]))
        guard FileManager.default.fileExists(atPath: data.path) else { throw XCTSkip("no calibration data at \(data.path)") }

        // The dense model as the pipelines hold it (F32, uncompressed: score reads it 30 times), then
        // calibrate as the fixture's producer ran it: its recorded command, with this model and data.
        let dir = try Fixtures.temporaryDirectory()
        let densePath = dir.appendingPathComponent("dense.st").path, statsPath = dir.appendingPathComponent("grads.st").path
        let converted = try runTool("convert", [modelPath, "-o", densePath, "--quiet"])
        XCTAssertEqual(converted.status, 0, converted.stderr)
        let recorded = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(try XCTUnwrap(meta["calibrate"]).utf8)) as? [String])
        XCTAssertEqual(recorded.first, "calibrate")
        let arguments = recorded.dropFirst().map { $0 == "MODEL" ? densePath : $0 == meta["data"] ? data.path : $0 }
        let run = try runTool("calibrate", arguments + ["--quiet", "-o", statsPath])
        XCTAssertEqual(run.status, 0, run.stderr)

        // Same model, data, windows and gradient bits as the fixture's, or a message that says which differs.
        let file = try TensorFile(path: statsPath)
        for (key, what) in [("fingerprint", "another model"), ("data_sha256", "another calibration data file"),
                            ("windows_sha256", "other windows")] {
            XCTAssertEqual(file.metadata[key], meta[key], "calibrate's statistics come from \(what) than the fixture's")
        }
        let layers = try XCTUnwrap(meta["layers"]).split(separator: ",").map { Int($0)! }
        XCTAssertEqual(layers, [0, 15, 29])
        var gradientsMoved: [Int] = []
        for l in layers {
            var h = SHA256()
            for p in ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"] {
                for suffix in ["grad_sum", "grad_sq_sum"] {
                    try file.withBytes("model.layers.\(l).\(p).weight.\(suffix)") { h.update($0) }
                }
            }
            if SHA256.hex(h.finalize()) != meta["grad_sha256.\(l)"] { gradientsMoved.append(l) }
        }
        guard gradientsMoved.isEmpty else {
            // The vector-wise first and mix scores |Σ W·G| cancel: last-bit changes of the gradients
            // move them by far more than 1e-6, so they are compared only on the fixture's own bits.
            XCTFail("""
                calibrate's gradient sums of layers \(gradientsMoved) differ in their bits from those the fixture \
                was computed from (another BLAS kernel or a changed backward?): regenerate it as \
                scripts/reference/taylor_smollm2_reference.py says
                """)
            return
        }

        // score --metric taylor on those statistics, once per order × granularity × reduction (each run
        // scores all 30 layers; the fixture holds 3).
        var maxRelative = 0.0, compared = 0
        for order in ["first", "second", "mix"] {
            for granularity in ["vector", "element"] {
                for reduce in ["sum", "mean", "max", "prod", "first"] {
                    let out = dir.appendingPathComponent("scores-\(order)-\(granularity)-\(reduce).st").path
                    let r = try runTool("score", ["--model", densePath, "--stats", statsPath, "--metric", "taylor", "--order", order,
                                                  "--granularity", granularity, "--reduce", reduce, "-o", out, "--quiet"])
                    XCTAssertEqual(r.status, 0, r.stderr)
                    let scores = try TensorFile(path: out)
                    XCTAssertEqual(scores.metadata["taylor"], "order=\(order);granularity=\(granularity);reduce=\(reduce)")
                    for l in layers {
                        let key = "score.\(order).\(granularity).\(reduce).\(l)"
                        for (kind, tensor) in [("attention", "self_attn.o_proj"), ("mlp", "mlp.down_proj")] {
                            let ours = try scores.doubles("model.layers.\(l).\(tensor).channel_score")
                            let expected = try ref.doubles("\(key).\(kind)")
                            // Every reference value is positive (the script checks it; the smallest,
                            // second.element.prod, are near 1e-22): the comparison is purely relative.
                            assertAllClose(ours, expected, atol: 0, rtol: 1e-6, "\(key).\(kind)")
                            for (a, e) in zip(ours, expected) { maxRelative = max(maxRelative, abs(a - e) / abs(e)) }
                            compared += expected.count
                        }
                    }
                    try FileManager.default.removeItem(atPath: out)
                }
            }
        }
        XCTAssertEqual(compared, 3 * 30 * (576 + 1536))
        print("TaylorSmolLM2Tests: \(compared) scores, max relative difference \(maxRelative)")
        #endif
    }
}
