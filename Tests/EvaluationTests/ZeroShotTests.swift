import Evaluation
import Foundation
import LlamaModel
import TensorIO
import TestSupport
import Tokenization
import XCTest

/// The seven tasks against lm-evaluation-harness 0.4.13 itself (scripts/reference/zeroshot_reference.py
/// built its requests on the same files and scored them with transformers on SmolLM2): the same
/// context and continuation strings, the same token ids, per-choice log-likelihoods within 1e-3,
/// the same greedy flags, acc and acc_norm.
final class ZeroShotTests: XCTestCase {
    func reference() throws -> [String: [String: Any]] {
        let d = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("zeroshot/smollm2_first20.json"))) as! [String: Any]
        return d["tasks"] as! [String: [String: Any]]
    }

    func testRequestsAndScoresEqualLMEvaluationHarness() throws {
        let model = try Model.open(try Fixtures.requireModel())
        let tokenizer = try Tokenizer(json: Data(model.tokenizerJSON!.utf8))
        let runner = Runner(model: model, maxPositions: 2048)
        #if DEBUG
        let limit = 2  // the forward pass of SmolLM2 is slow without optimisation; every item in release
        #else
        let limit = 20
        #endif
        for (name, ref) in try reference().sorted(by: { $0.key < $1.key }) {
            let task = ZeroShotTask(rawValue: name)!
            let items = try zeroShotItems(task, dataDirectory: Fixtures.dataDirectory.path, limit: limit)
            let refItems = (ref["items"] as! [[String: Any]]).prefix(limit)
            XCTAssertEqual(items.count, refItems.count, name)
            for (item, r) in zip(items, refItems) {
                XCTAssertEqual(item.gold, r["gold"] as? Int, name)
                let requests = r["requests"] as! [[String: Any]]
                XCTAssertEqual(item.requests.count, requests.count, name)
                for (ours, theirs) in zip(item.requests, requests) {
                    XCTAssertEqual(ours.context, theirs["context"] as? String, name)
                    XCTAssertEqual(ours.continuation, theirs["continuation"] as? String, name)
                    let (c, t) = encodePair(context: ours.context, continuation: ours.continuation, tokenizer: tokenizer,
                                            addSpecialTokens: true)
                    XCTAssertEqual(c.map(Int.init), theirs["context_ids"] as? [Int], "\(name) context ids")
                    XCTAssertEqual(t.map(Int.init), theirs["continuation_ids"] as? [Int], "\(name) continuation ids")
                }
            }
            let scores = try scoreZeroShot(task, items: items, runner: runner, tokenizer: tokenizer)
            for (i, (mine, r)) in zip(scores.choices, refItems).enumerated() {
                let requests = r["requests"] as! [[String: Any]]
                assertAllClose(mine.map(\.logLikelihood), requests.map { $0["loglikelihood_f64"] as! Double },
                               atol: 1e-3, rtol: 0, "\(name) item \(i)")
                XCTAssertEqual(mine.map(\.isGreedy), requests.map { $0["is_greedy_f64"] as! Bool }, "\(name) item \(i) greedy")
            }
            XCTAssertEqual(scores.correct.map { $0 ? 1.0 : 0.0 }, refItems.map { $0["acc"] as! Double }, name)
            if task.reportsNormalised {
                XCTAssertEqual(scores.correctNormalised.map { $0 ? 1.0 : 0.0 }, refItems.map { $0["acc_norm"] as! Double }, name)
            }
            if limit == 20 {
                let result = ZeroShotResult(scores)
                XCTAssertEqual(result.acc, ref["acc"] as! Double, accuracy: 1e-12, name)
                XCTAssertEqual(result.accStderr, ref["acc_stderr"] as! Double, accuracy: 1e-12, name)
                XCTAssertEqual(result.accNorm ?? -1, ref["acc_norm"] as? Double ?? -1, accuracy: 1e-12, name)
            }
        }
    }

    /// A data folder with one task file written by the test.
    func folder(_ files: [String: [UInt8]]) throws -> String {
        let dir = try Fixtures.temporaryDirectory()
        for (path, bytes) in files {
            let url = dir.appendingPathComponent("tasks/" + path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(bytes).write(to: url)
        }
        return dir.path
    }

    func refusal(_ task: ZeroShotTask, _ files: [String: String]) throws -> String {
        let dir = try folder(files.mapValues { Array($0.utf8) })
        do {
            _ = try zeroShotItems(task, dataDirectory: dir)
            return "accepted"
        } catch { return "\(error)" }
    }

    func testBadTaskFilesAreRefusedNamingFileAndLine() throws {
        let piqa = "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n"
        XCTAssertTrue(try refusal(.piqa, ["piqa/valid.jsonl": piqa + "{\"goal\": \"g\", \"sol1\": \"a\"}\n", "piqa/valid-labels.lst": "0\n1\n"])
            .hasSuffix("piqa/valid.jsonl:2: missing field 'sol2'"))
        XCTAssertTrue(try refusal(.piqa, ["piqa/valid.jsonl": piqa, "piqa/valid-labels.lst": "2\n"])
            .hasSuffix("piqa/valid-labels.lst:1: label '2' is not one of 0, 1"))
        XCTAssertTrue(try refusal(.piqa, ["piqa/valid.jsonl": piqa + piqa, "piqa/valid-labels.lst": "1\n"])
            .contains("piqa/valid-labels.lst:2: no label for"))
        XCTAssertTrue(try refusal(.piqa, ["piqa/valid.jsonl": "", "piqa/valid-labels.lst": ""]).hasSuffix("no JSON lines (an empty file)"))
        XCTAssertTrue(try refusal(.piqa, ["piqa/valid.jsonl": "{\"goal\": 1,", "piqa/valid-labels.lst": "0\n"]).contains("piqa/valid.jsonl:1: invalid JSON"))
        let arc = "{\"question\": {\"stem\": \"s\", \"choices\": [{\"text\": \"x\", \"label\": \"A\"}]}, \"answerKey\": \"E\"}\n"
        XCTAssertTrue(try refusal(.arcEasy, ["arc_easy/ARC-Easy-Test.jsonl": arc]).hasSuffix(":1: answerKey 'E' is not one of the choice labels [\"A\"]"))
        XCTAssertTrue(try refusal(.winogrande, ["winogrande/dev.jsonl": "{\"sentence\": \"no blank\", \"option1\": \"a\", \"option2\": \"b\"}\n",
                                                "winogrande/dev-labels.lst": "1\n"]).hasSuffix(":1: the sentence has no '_'"))
        XCTAssertTrue(try refusal(.hellaswag, ["hellaswag/hellaswag_val_full.txt.zst": "q\n7\na\nb\nc\nd\n"]).hasSuffix(":2: label '7' is not 0, 1, 2 or 3"))
        XCTAssertTrue(try refusal(.hellaswag, ["hellaswag/hellaswag_val_full.txt.zst": "q\n1\na\nb\n"]).contains("not 6 per item (truncated?)"))
        XCTAssertTrue(try refusal(.boolq, ["boolq/val.jsonl.zst": "{\"question\": \"q\", \"passage\": \"p\", \"label\": \"maybe\"}\n"])
            .hasSuffix("boolq/val.jsonl.zst:1: field 'label' is not true or false"))
        // A truncated zstd file: the frame ends early.
        let packed = try Fixtures.temporaryDirectory().appendingPathComponent("x.st.zst").path
        let payload = Array(String(repeating: piqa, count: 50).utf8)
        try writeTensorFile(path: packed, tensors: [(TensorEntry(name: "x", dtype: .U8, shape: [payload.count]), payload)],
                            metadata: [:], compress: true)
        let compressed = [UInt8](try Data(contentsOf: URL(fileURLWithPath: packed)))
        let dir = try folder(["piqa/valid.jsonl": Array(compressed.prefix(compressed.count / 2)), "piqa/valid-labels.lst": Array("0\n".utf8)])
        XCTAssertThrowsError(try zeroShotItems(.piqa, dataDirectory: dir)) { XCTAssertTrue("\($0)".contains("piqa/valid.jsonl"), "\($0)") }
    }

    func testUnknownTaskNamesListTheKnownOnes() {
        XCTAssertThrowsError(try ZeroShotTask.list("piqa,lambada")) {
            XCTAssertEqual("\($0)", "unknown task 'lambada' (known: boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa, or all)")
        }
        XCTAssertEqual(try ZeroShotTask.list("all").count, 7)
    }
}

/// `evaluate --report`'s counts: MACs per token from the configuration, by hand on a small one.
final class SpeedReportTests: XCTestCase {
    func testMACsPerTokenCountEveryWeightAndTheAttention() throws {
        let c = try LlamaConfig(hiddenSize: 48, numLayers: 3, headDim: 8, headCounts: [4, 0, 6], kvHeadCounts: [2, 0, 3],
                                ffnWidths: [40, 24, 0], vocabSize: 61, rmsNormEps: 1e-5, ropeTheta: 10000,
                                maxPositionEmbeddings: 128, tieWordEmbeddings: true)
        let linear = (2 * 48 * 8 * (4 + 2) + 3 * 48 * 40) + 3 * 48 * 24 + 2 * 48 * 8 * (6 + 3)
        let keys = Double(128 + 1) / 2
        // Layer 0: 4 query heads, layer 2: 6, each D for q·kᵀ and D for p·v per key.
        let attention = Double(4 + 6) * Double(8 + 8) * keys
        XCTAssertEqual(SpeedReport.macsPerToken(c, T: 128), Double(linear + 61 * 48) + attention)
        // Narrowed value heads cost their widths in p·v.
        let narrow = c.withValueWidths([[3, 8], [], [8, 8, 1]])
        let narrowed = Double(2 * (8 + 3) + 2 * (8 + 8) + 2 * (8 + 8) + 2 * (8 + 8) + 2 * (8 + 1)) * keys
        XCTAssertEqual(SpeedReport.macsPerToken(narrow, T: 128),
                       Double(narrow.layerLinearParameters() + 61 * 48) + narrowed)
    }
}
