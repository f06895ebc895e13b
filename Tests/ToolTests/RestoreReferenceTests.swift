// `restore` against an independent numpy float64 implementation of its documented math
// (scripts/reference/restore_reference.py, which wrote Tests/Fixtures/restore/smollm2_restore.safetensors
// from this same pipeline: SmolLM2, 4 × 256 C4 windows, FASP scores, a 30% UL-UM V/O plan). For each method
// (bias, lsq, bias+lsq; --damp 0.01) and layers 0, 11, 14 and 29 it checks, in the restored model, 16 rows of the
// o_proj and down_proj weights (which also checks the kept columns of the V/O plan), their biases (and that lsq
// adds none), the reconstruction errors restore prints and its fallback to the plain slice (layer 11's down_proj
// under lsq and bias+lsq, whose damped fit is worse than the slice). Inputs are checked first, so that different
// statistics or a different plan fail as such rather than as a difference of math.
// Regenerate the fixture: python3 scripts/reference/restore_reference.py --bin .build/release
import Foundation
import TensorIO
import TestSupport
import XCTest

final class RestoreReferenceTests: XCTestCase {
    private static let methods = ["bias", "lsq", "bias+lsq"]
    private static let consumers = [("o_proj", "self_attn.o_proj"), ("down_proj", "mlp.down_proj")]

    /// The pipeline, with $MODEL, $DATA and output names in the working folder, as the fixture records it.
    private static let commands: [[String]] = [
        ["convert", "$MODEL", "-o", "dense.st", "--quiet"],
        ["calibrate", "--model", "dense.st", "--jsonl", "$DATA/c4/c4-validation-sample-2k.jsonl.zst", "--samples", "4",
         "--seqlen", "256", "--gram", "o_proj,down_proj", "--gram-dtype", "f64", "--quiet", "-o", "stats.st"],
        ["score", "--model", "dense.st", "--stats", "stats.st", "--metric", "fasp", "--quiet", "-o", "scores.st"],
        ["allocate", "--scores", "scores.st", "--ratio", "0.3", "--structure", "UL-UM", "--attention-unit", "vo",
         "--quiet", "-o", "plan.st"],
        ["slice", "--model", "dense.st", "--plan", "plan.st", "--quiet", "-o", "sliced.st"],
    ]

    /// Not --quiet: the error table restore prints on stderr is checked too.
    private static func restoreCommand(_ method: String) -> [String] {
        ["restore", "--model", "sliced.st", "--dense", "dense.st", "--stats", "stats.st", "--plan", "plan.st",
         "--method", method, "-o", "restored-\(method).st"]
    }

    func testRestoreMatchesNumpyReferenceOnSmolLM2() throws {
        let ref = try TensorFile(path: Fixtures.url("restore/smollm2_restore.safetensors").path)
        let model = try Fixtures.requireModel()
        let data = Fixtures.data("c4/c4-validation-sample-2k.jsonl.zst").path
        guard FileManager.default.fileExists(atPath: data) else {
            throw FixtureError.missing("\(data) not found: set PRUNEKIT_DATA to the shared data folder")
        }
        let recorded = try JSONDecoder().decode([[String]].self, from: Data((ref.metadata["commands"] ?? "").utf8))
        XCTAssertEqual(recorded, Self.commands + Self.methods.map(Self.restoreCommand),
                       "the fixture was made with other commands: regenerate it")
        let layers = try JSONDecoder().decode([Int].self, from: Data((ref.metadata["layers"] ?? "").utf8))
        let rows = try ref.integers("rows")
        XCTAssertEqual(ref.metadata["damp"], "0.01")

        // F32 SmolLM2 files are ~0.4–0.65 GB each: at most dense, stats, sliced and one restored model exist at a time.
        // (.st.zst would not lower that peak: a reader decompresses a large file into a temporary file.)
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        func remove(_ name: String) { try? FileManager.default.removeItem(atPath: path(name)) }
        @discardableResult
        func run(_ command: [String]) throws -> ToolResult {
            let args = command.dropFirst().map { a -> String in
                if a == "$MODEL" { return model }
                if a.hasPrefix("$DATA/") { return Fixtures.data(String(a.dropFirst(6))).path }
                return a.hasSuffix(".st") ? path(a) : a
            }
            let r = try runTool(command[0], Array(args))
            guard r.status == 0 else { throw StepFailed(description: "\(command[0]) exited \(r.status): \(r.stderr)") }
            return r
        }

        for command in Self.commands.prefix(4) { try run(command) }
        remove("scores.st")

        // The inputs: the same model, calibration windows, statistics and plan as the reference's.
        let dense = try TensorFile(path: path("dense.st"))
        XCTAssertEqual(dense.metadata["fingerprint"], ref.metadata["dense_fingerprint"], "another model than the reference's")
        do {
            let stats = try TensorFile(path: path("stats.st"))
            XCTAssertEqual(stats.metadata["windows_sha256"], ref.metadata["stats_windows_sha256"],
                           "calibrate drew other windows than the reference's")
            var hash = SHA256()
            for l in layers {
                for (_, module) in Self.consumers {
                    for field in ["count", "sum", "gram"] {
                        try stats.withBytes("model.layers.\(l).\(module).input.\(field)") { hash.update($0) }
                    }
                }
            }
            let plan = try TensorFile(path: path("plan.st"))
            var planDiffers: [String] = []
            for l in layers {
                for list in ["kept_heads", "kept_kv_heads", "kept_value_dims"] {
                    let name = "model.layers.\(l).self_attn.\(list)", expected = "plan.\(l).\(list)"
                    let a = plan.header.entry(name) == nil ? nil : try plan.integers(name)
                    let e = ref.header.entry(expected) == nil ? nil : try ref.integers(expected)
                    if a != e { planDiffers.append(name) }
                }
                if try plan.integers("model.layers.\(l).mlp.kept_channels") != ref.integers("model.layers.\(l).mlp.down_proj.kept_columns") {
                    planDiffers.append("model.layers.\(l).mlp.kept_channels")
                }
            }
            let statsDigest = SHA256.hex(hash.finalize())
            guard statsDigest == ref.metadata["stats_tensors_sha256"], planDiffers.isEmpty else {
                XCTFail("""
                    the inputs differ from the reference's (not a difference of restore's math): statistics \
                    \(statsDigest == ref.metadata["stats_tensors_sha256"] ? "equal" : "differ (sha256 \(statsDigest))"), \
                    plan lists that differ: \(planDiffers); regenerate the fixture if calibrate, score or allocate changed on purpose
                    """)
                return
            }
        }

        try run(Self.commands[4])
        let sliced = try TensorFile(path: path("sliced.st"))
        XCTAssertEqual(sliced.metadata["plan_digest"], ref.metadata["plan_digest"], "the whole plan's digest")

        // The plain slice's rows W[rows, K] from the dense model: the expected weight of method bias and of a fallback.
        func plainRows(_ p: String, _ kept: [Int]) throws -> [Float] {
            let inF = try XCTUnwrap(dense.header.entry("\(p).weight")?.shape.last)
            let w = try dense.floats("\(p).weight")
            return rows.flatMap { r in kept.map { w[r * inF + $0] } }
        }

        for method in Self.methods {
            let r = try run(Self.restoreCommand(method))
            let table = Self.errorTable(r.stderr)
            do {
                let out = try TensorFile(path: path("restored-\(method).st"))
                XCTAssertEqual(out.metadata["restore"], method)
                for l in layers {
                    for (short, module) in Self.consumers {
                        let p = "model.layers.\(l).\(module)", c = "\(p).\(method)", what = "layer \(l) \(short) \(method)"
                        let kept = try ref.integers("\(p).kept_columns"), k = kept.count
                        let fellBack = try ref.integers("\(c).fell_back") == [1]
                        XCTAssertEqual(out.header.entry("\(p).weight")?.shape, [576, k], what)
                        let w = try out.floats("\(p).weight")
                        guard w.count == 576 * k else { continue }
                        let actual = rows.flatMap { r in w[(r * k)..<((r + 1) * k)] }
                        // The tool's weights are float32 (relative rounding 6e-8) from a float64 solve; differences
                        // of the two solves' rounding scale with a row's norm, not with each entry, so an entry near
                        // zero may miss rtol alone: atol = 1e-5 × the RMS of the expected values (~1e-7 for these
                        // weights). The reference script measured at most 0.006 of this tolerance on every layer.
                        if ref.header.entry("\(c).weight_rows") != nil {
                            XCTAssertFalse(fellBack || method == "bias", what)
                            let expected = try ref.doubles("\(c).weight_rows")
                            assertAllClose(actual, expected, atol: 1e-5 * Self.rms(expected), rtol: 1e-5, "\(what) weight rows")
                        } else {
                            XCTAssertTrue(fellBack || method == "bias", what)
                            let expected = try plainRows(p, kept)
                            XCTAssertEqual(actual, expected, "\(what): the plain slice W[:, K]")
                        }
                        let bias = "\(p).bias"
                        if ref.header.entry("\(c).bias") != nil {
                            let expected = try ref.doubles("\(c).bias")
                            XCTAssertEqual(out.header.entry(bias)?.shape, [576], "\(what): bias")
                            if out.header.entry(bias) != nil {
                                // (A fallback's bias is all zeros: atol 0, the zeros exactly.)
                                assertAllClose(try out.floats(bias), expected, atol: 1e-5 * Self.rms(expected), rtol: 1e-5,
                                               "\(what) bias")
                            }
                        } else {
                            XCTAssertNil(out.header.entry(bias), "\(what): lsq adds no bias to a model without one")
                        }
                        // The error table: "%10.4g → %10.4g", so 4 significant digits.
                        let errors = try ref.doubles("\(c).errors")
                        if let row = table[l]?[short] {
                            XCTAssertEqual(row.before, errors[0], accuracy: 1e-3 * errors[0], "\(what): error before")
                            XCTAssertEqual(row.after, errors[1], accuracy: 1e-3 * errors[1], "\(what): error after")
                            XCTAssertEqual(row.fellBack, fellBack, "\(what): kept the plain slice")
                        } else {
                            XCTFail("\(what): no row in restore's error table:\n\(r.stderr)")
                        }
                    }
                }
            }
            remove("restored-\(method).st")
        }
        for name in ["sliced.st", "stats.st", "plan.st", "dense.st"] { remove(name) }
    }

    private static func rms(_ x: [Double]) -> Double {
        x.isEmpty ? 0 : (x.reduce(0) { $0 + $1 * $1 } / Double(x.count)).squareRoot()
    }

    /// restore's stderr table, "%5d  o_proj %10.4g → %10.4g[ (kept the plain slice)]   down_proj …", by layer and consumer.
    private static func errorTable(_ stderr: String) -> [Int: [String: (before: Double, after: Double, fellBack: Bool)]] {
        var out: [Int: [String: (before: Double, after: Double, fellBack: Bool)]] = [:]
        for line in stderr.split(separator: "\n") {
            let t = line.split(separator: " ").map(String.init)
            guard let l = t.first.flatMap({ Int($0) }) else { continue }
            for name in ["o_proj", "down_proj"] {
                guard let i = t.firstIndex(of: name), i + 3 < t.count, t[i + 2] == "→",
                      let before = Double(t[i + 1]), let after = Double(t[i + 3]) else { continue }
                out[l, default: [:]][name] = (before, after, i + 4 < t.count && t[i + 4] == "(kept")
            }
        }
        return out
    }
}

private struct StepFailed: Error, CustomStringConvertible {
    var description: String
}
