import Calibration
import Foundation
import LlamaModel
import TensorIO
import TestSupport
import Tokenization
import XCTest

/// Calibration statistics: the window drawing, the accumulators, shards and determinism.
final class CalibrationTests: XCTestCase {
    /// Values printed by CPython 3.11: `random.seed(0); [random.randint(0, 1999) for _ in
    /// range(5)], random.getrandbits(40)` and `random.seed(12345678901); [random.randint(5, 7)
    /// for _ in range(5)]`.
    func testPythonRandomMatchesCPython() {
        var r = PythonRandom(seed: 0)
        XCTAssertEqual((0..<5).map { _ in r.randint(0, 1999) }, [1729, 788, 1552, 1823, 861])
        XCTAssertEqual(r.getrandbits(40), 283_641_720_628)
        var big = PythonRandom(seed: 12_345_678_901)
        XCTAssertEqual((0..<5).map { _ in big.randint(5, 7) }, [7, 6, 6, 6, 7])
    }

    /// The closed form from per-window sums equals FLAP's recurrence run sample by sample on the
    /// rows themselves (subtracting the just-updated baseline), and is not the sample variance
    /// times a constant.
    func testFlapFluctuationEqualsThePerSampleRecurrence() {
        var rng = PythonRandom(seed: 7)
        let N = 5, T = 7, w = 3
        var rows = [[Double]](repeating: [], count: N * T)
        for i in 0..<(N * T) {
            rows[i] = (0..<w).map { j in Double(rng.randint(0, 1000)) / 100 + Double(j * i % 5) }
        }
        var s = [Double](repeating: 0, count: N * w), q = s
        for n in 0..<N {
            for t in 0..<T {
                for j in 0..<w {
                    s[n * w + j] += rows[n * T + t][j]
                    q[n * w + j] += rows[n * T + t][j] * rows[n * T + t][j]
                }
            }
        }
        let closed = flapFluctuation(windowSum: s, windowSumsq: q, windows: N, windowLength: T, width: w)
        var baseline = [Double](repeating: 0, count: w), fluc = [Double](repeating: 0, count: w)
        for n in 0..<N {
            let dn = Double(n)
            for j in 0..<w {
                let mean = (0..<T).map { rows[n * T + $0][j] }.reduce(0, +) / Double(T)
                baseline[j] = baseline[j] * dn / (dn + 1) + mean / (dn + 1)
                if n == 0 { fluc[j] = 0; continue }
                let dev = (0..<T).map { (rows[n * T + $0][j] - baseline[j]) * (rows[n * T + $0][j] - baseline[j]) }
                fluc[j] = fluc[j] * (dn - 1) / dn + dev.reduce(0, +) / (dn + 1)
            }
        }
        assertAllClose(closed, fluc, atol: 1e-12, rtol: 1e-12)
        // Against the unbiased variance over all N·T rows: the ratio is not one constant.
        let ratios = (0..<w).map { j -> Double in
            let all = rows.map { $0[j] }
            let mean = all.reduce(0, +) / Double(all.count)
            let variance = all.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(all.count - 1)
            return closed[j] / variance
        }
        XCTAssertGreaterThan(ratios.max()! / ratios.min()!, 1.01, "\(ratios)")
    }

    func tinyWindows(_ N: Int, _ T: Int, vocabulary V: Int) -> CalibrationWindows {
        var rng = PythonRandom(seed: 3)
        let ids = (0..<(N * T)).map { _ in Int32(rng.randint(0, V - 1)) }
        return CalibrationWindows(ids: ids, count: N, length: T, mode: "tokens", dataSHA256: "test")
    }

    func runCalibration(_ model: Model, _ windows: CalibrationWindows, shard: (Int, Int)?, to path: String,
                        gram: Set<StatPoint> = Set(StatPoint.allCases), dtype: DType = .F64, batchRows: Int = 4096,
                        cache: String? = nil, cacheElement: DType = .F32, fromCache: Bool = false) throws {
        let calibrator = try Calibrator(model: model, windows: windows, shard: shard, gramPoints: gram, gramDType: dtype,
                                        batchRows: batchRows)
        let fingerprint = try model.fingerprint()
        let writer = try TensorFileWriter(
            path: path, entries: calibrator.layout.entries(model.config),
            metadata: calibrator.metadata(fingerprint: fingerprint, source: .tokens("t"), seed: 0))
        let activations = try cache.map {
            try ActivationCache(directory: $0, element: cacheElement, fingerprint: fingerprint, windows: windows,
                                range: calibrator.range, batchWindows: calibrator.batchWindows)
        }
        try calibrator.run(into: writer, cache: activations, fromCache: fromCache)
        try writer.finish()
    }

    func assertSameStatistics(_ a: String, _ b: String, rtol: Double, atol: Double = 1e-9, file: StaticString = #filePath, line: UInt = #line) throws {
        let fa = try TensorFile(path: a), fb = try TensorFile(path: b)
        XCTAssertEqual(fa.header.entries.map(\.name), fb.header.entries.map(\.name), file: file, line: line)
        for e in fa.header.entries {
            if e.dtype.isInteger {
                XCTAssertEqual(try fa.integers(e.name), try fb.integers(e.name), e.name, file: file, line: line)
            } else {
                assertAllClose(try fa.doubles(e.name), try fb.doubles(e.name), atol: atol, rtol: rtol,
                               e.name, file: file, line: line)
            }
        }
    }

    /// Shards of the same windows merged equal one run over all of them (to float64 rounding);
    /// a merge of some shards is a shard again.
    func testMergedShardsEqualOneRun() throws {
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let windows = tinyWindows(7, 12, vocabulary: model.config.vocabSize)
        let dir = try Fixtures.temporaryDirectory()
        let whole = dir.appendingPathComponent("whole.st").path
        try runCalibration(model, windows, shard: nil, to: whole, batchRows: 24)
        XCTAssertThrowsError(try runCalibration(model, windows, shard: (0, 5), to: whole + "x", batchRows: 24)) {
            XCTAssertTrue("\($0)".contains("is empty"), "\($0)")
        }
        for n in [2, 3] {
            var shards: [String] = []
            for i in 0..<n {
                let path = dir.appendingPathComponent("s\(i)of\(n).st").path
                try runCalibration(model, windows, shard: (i, n), to: path, batchRows: 24)
                shards.append(path)
            }
            let merged = dir.appendingPathComponent("merged\(n).st").path
            try StatisticsMerge.merge(shards.reversed(), output: merged, metadata: [:])
            try assertSameStatistics(whole, merged, rtol: 1e-12)
            XCTAssertNil(try TensorFile(path: merged).metadata["shards"])
            if n == 3 {
                // 0 and 2 first (a shard file of their union), then with 1.
                let partial = dir.appendingPathComponent("partial.st").path
                XCTAssertThrowsError(try StatisticsMerge.merge([shards[2], shards[0]], output: partial, metadata: [:])) {
                    XCTAssertEqual(($0 as? CalibrationError)?.message,
                                   "shard 1 of 3 is missing (--partial merges a subset into a shard file)")
                }
                XCTAssertFalse(FileManager.default.fileExists(atPath: partial))
                try StatisticsMerge.merge([shards[2], shards[0]], output: partial, metadata: [:], partial: true)
                XCTAssertEqual(try TensorFile(path: partial).metadata["shards"], "0,2")
                let again = dir.appendingPathComponent("again.st").path
                try StatisticsMerge.merge([partial, shards[1]], output: again, metadata: [:])
                try assertSameStatistics(whole, again, rtol: 1e-12)
            }
        }
    }

    func testMergeRefusesMismatchedOrRepeatedShards() throws {
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let dir = try Fixtures.temporaryDirectory()
        let a = dir.appendingPathComponent("a.st").path, b = dir.appendingPathComponent("b.st").path
        let whole = dir.appendingPathComponent("w.st").path
        try runCalibration(model, tinyWindows(4, 8, vocabulary: model.config.vocabSize), shard: (0, 2), to: a, gram: [], batchRows: 8)
        try runCalibration(model, tinyWindows(4, 9, vocabulary: model.config.vocabSize), shard: (1, 2), to: b, gram: [], batchRows: 9)
        try runCalibration(model, tinyWindows(4, 8, vocabulary: model.config.vocabSize), shard: nil, to: whole, gram: [], batchRows: 8)
        let out = dir.appendingPathComponent("out.st").path
        let cases: [([String], String)] = [
            ([a, b], "differ in seqlen"), ([a, a], "shard 0 is given twice"), ([a, whole], "a complete statistics file"),
            ([a, Fixtures.url("model/tiny_uniform.safetensors").path], "not a statistics file"),
        ]
        for (inputs, message) in cases {
            XCTAssertThrowsError(try StatisticsMerge.merge(inputs, output: out, metadata: [:])) {
                XCTAssertTrue("\($0)".contains(message), "\($0)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
    }

    /// The same windows and batching give byte-identical files. (Another batching changes the
    /// float32 rounding of the products, as sgemm's blocking depends on the number of rows.)
    func testDeterministic() throws {
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let windows = tinyWindows(5, 10, vocabulary: model.config.vocabSize)
        let dir = try Fixtures.temporaryDirectory()
        let paths = (0..<4).map { dir.appendingPathComponent("r\($0).st.zst").path }
        try runCalibration(model, windows, shard: nil, to: paths[0])
        try runCalibration(model, windows, shard: nil, to: paths[1])
        try runCalibration(model, windows, shard: nil, to: paths[2], batchRows: 20)
        try runCalibration(model, windows, shard: nil, to: paths[3], batchRows: 20)
        let bytes = try paths.map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
        XCTAssertEqual(bytes[0], bytes[1])
        XCTAssertEqual(bytes[2], bytes[3])
        try assertSameStatistics(paths[0], paths[2], rtol: 1e-4, atol: 1e-4)
    }

    /// Statistics of a run against those captured by forward hooks in transformers on the same
    /// windows (scripts/reference/calibrate_reference.py): every tensor of the fixture.
    func checkAgainstReference(model: Model, fixture: String, layers: [Int]?, gram: Set<StatPoint>, dtype: DType,
                               rtol: Double, atol: Double) throws {
        let ref = try TensorFile(path: Fixtures.url("calibrate/\(fixture)").path)
        let entry = ref.header.entry("windows")!
        let ids = try ref.integers("windows").map { Int32($0) }
        let windows = CalibrationWindows(ids: ids, count: entry.shape[0], length: entry.shape[1], mode: "tokens",
                                         dataSHA256: "fixture")
        let dir = try Fixtures.temporaryDirectory()
        let out = dir.appendingPathComponent("stats.st").path
        try runCalibration(model, windows, shard: nil, to: out, gram: gram, dtype: dtype)
        let ours = try TensorFile(path: out)
        var compared = 0
        for e in ref.header.entries where e.name != "windows" {
            guard ours.header.entry(e.name) != nil else {
                XCTFail("\(e.name) missing from our statistics")
                continue
            }
            if e.dtype.isInteger {
                XCTAssertEqual(try ours.integers(e.name), try ref.integers(e.name), e.name)
            } else {
                // Sums over tokens cancel: tolerance relative to the sum of magnitudes' scale.
                let expected = try ref.doubles(e.name)
                let scale = expected.map(abs).max() ?? 1
                assertAllClose(try ours.doubles(e.name), expected, atol: atol * max(scale, 1), rtol: rtol, e.name)
            }
            compared += 1
        }
        if let layers {
            for name in ours.header.entries.map(\.name) {
                let l = Int(name.split(separator: ".")[2])!
                if layers.contains(l), ref.header.entry(name) == nil, !name.hasSuffix(".gram") {
                    XCTFail("\(name) not in the reference")
                }
            }
        }
        XCTAssertGreaterThan(compared, 40)
    }

    func testTinyStatisticsEqualTransformersHooks() throws {
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        try checkAgainstReference(model: model, fixture: "tiny_uniform_stats.safetensors", layers: nil,
                                  gram: Set(StatPoint.allCases), dtype: .F64, rtol: 1e-5, atol: 1e-6)
    }

    func testSmolLM2StatisticsEqualTransformersHooks() throws {
        let model = try Model.open(try Fixtures.requireModel())
        try checkAgainstReference(model: model, fixture: "smollm2_stats.safetensors", layers: [0, 1, 15, 29],
                                  gram: [.oProjInput], dtype: .F32, rtol: 1e-4, atol: 1e-5)
    }

    /// The windows drawn from the C4 samples and a text file equal those Python's `random`
    /// draws with the GPTQ/Wanda procedure from transformers' token ids (windows.json).
    func testWindowsEqualThePythonDrawing() throws {
        let model = try Model.open(try Fixtures.requireModel())
        let tokenizer = try Tokenizer(json: Data(model.tokenizerJSON!.utf8))
        let cases = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Fixtures.url("calibrate/windows.json"))) as! [String: [String: Any]]
        XCTAssertEqual(cases.count, 4)
        for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
            let path = Fixtures.data(c["source"] as! String).path
            let source: CalibrationSource = (c["kind"] as! String) == "jsonl" ? .jsonl(path) : .text(path)
            let w = try CalibrationWindows.draw(source, tokenizer: tokenizer, samples: c["samples"] as! Int,
                                                length: c["seqlen"] as! Int, seed: UInt64(c["seed"] as! Int),
                                                vocabularySize: model.config.vocabSize)
            XCTAssertEqual(w.mode, c["mode"] as? String, name)
            XCTAssertEqual(w.sha256, c["sha256"] as? String, name)
            let heads = (c["head"] as! [[Int]]).map { $0.map { Int32($0) } }
            XCTAssertEqual((0..<w.count).map { Array(w.window($0).prefix(8)) }, heads, name)
            XCTAssertEqual(w.note != nil, (c["kind"] as! String) == "jsonl" && w.mode == "joined", name)
        }
    }

    /// The cache: a rerun copies cached layers, resumes from a cached input, and `fromCache`
    /// recomputes with a Gram added; all byte-identical to runs without a cache. A BF16 cache
    /// gives statistics of BF16-rounded inputs.
    func testCacheGivesIdenticalStatistics() throws {
        let model = try Model.open(Fixtures.url("model/tiny_uniform.safetensors").path)
        let windows = tinyWindows(4, 16, vocabulary: model.config.vocabSize)
        let dir = try Fixtures.temporaryDirectory()
        let cache = dir.appendingPathComponent("cache").path
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        try runCalibration(model, windows, shard: nil, to: path("plain.st"), gram: [])
        try runCalibration(model, windows, shard: nil, to: path("plainGram.st"), gram: [.downProjInput])
        try runCalibration(model, windows, shard: nil, to: path("first.st"), gram: [], cache: cache)
        let files = try FileManager.default.contentsOfDirectory(atPath: cache).sorted()
        XCTAssertEqual(files, ["layer-0.input.st.zst", "layer-0.stats.st", "layer-1.input.st.zst", "layer-1.stats.st"])
        try runCalibration(model, windows, shard: nil, to: path("again.st"), gram: [], cache: cache)
        try FileManager.default.removeItem(atPath: cache + "/layer-1.stats.st")
        try runCalibration(model, windows, shard: nil, to: path("resumed.st"), gram: [], cache: cache)
        try runCalibration(model, windows, shard: nil, to: path("fromCache.st"), gram: [.downProjInput], cache: cache,
                           fromCache: true)
        let plain = try Data(contentsOf: URL(fileURLWithPath: path("plain.st")))
        for name in ["first.st", "again.st", "resumed.st"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path(name))), plain, name)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("fromCache.st"))),
                       try Data(contentsOf: URL(fileURLWithPath: path("plainGram.st"))))

        let half = dir.appendingPathComponent("half").path
        try runCalibration(model, windows, shard: nil, to: path("h1.st"), gram: [], cache: half, cacheElement: .BF16)
        try runCalibration(model, windows, shard: nil, to: path("h2.st"), gram: [], cache: half, cacheElement: .BF16,
                           fromCache: true)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("h1.st"))), plain)
        try assertSameStatistics(path("plain.st"), path("h2.st"), rtol: 2e-2, atol: 0.2)
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: path("h2.st"))), plain)

        XCTAssertThrowsError(try runCalibration(model, tinyWindows(4, 15, vocabulary: model.config.vocabSize), shard: nil,
                                                to: path("x.st"), gram: [], cache: cache, fromCache: true)) {
            XCTAssertTrue("\($0)".contains("no cached input of layer 0"), "\($0)")
        }
    }
}
