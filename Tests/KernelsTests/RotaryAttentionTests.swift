import Foundation
import Kernels
import TestSupport
import XCTest

final class RotaryTests: XCTestCase {
    func check(_ name: String) throws {
        let f = try FixtureFile(name)
        let meta = try f.doubles("meta"), D = Int(meta[0])
        var scaling: Llama3RopeScaling? = nil
        if let s = try? f.doubles("scaling") {
            scaling = Llama3RopeScaling(factor: s[0], lowFreqFactor: s[1], highFreqFactor: s[2],
                                        originalMaxPositionEmbeddings: Int(s[3]))
        }
        let table = RotaryTable(headDim: D, theta: meta[1], scaling: scaling, maxPositions: 4096)
        // inv_freq: bit-identical but where torch's vectorised powf is itself one ulp off.
        let inv = try f.floats("inv_freq")
        let ulpsOff = zip(table.inverseFrequencies, inv).map { abs($0 - $1) / $1.ulp }
        XCTAssertLessThanOrEqual(ulpsOff.max()!, 1, "\(name) inv_freq")
        XCTAssertLessThanOrEqual(ulpsOff.filter { $0 > 0 }.count, 1, "\(name) inv_freq mismatches")
        for i in 0..<2 {
            let s = try f.shape("\(i).x"), T = s[0], H = s[1]
            let start = try f.ints("\(i).start")[0]
            let cs = table.cosSin(position: start + T - 1)
            let half = D / 2, c32 = try f.floats("\(i).cos32"), s32 = try f.floats("\(i).sin32")
            assertAllClose(Array(cs.cos), Array(c32[((T - 1) * half)...]), atol: 1e-7, rtol: 0)
            assertAllClose(Array(cs.sin), Array(s32[((T - 1) * half)...]), atol: 1e-7, rtol: 0)
            var x = try f.floats("\(i).x")
            table.apply(&x, T: T, H: H, start: start)
            assertAllClose(x, try f.floats("\(i).expected32"), atol: 2e-7, rtol: 2e-7,
                           "\(name) case \(i)")
            assertAllClose(x, try f.doubles("\(i).expected64"), atol: 2e-7, rtol: 2e-7,
                           "\(name) case \(i)")
            // Same float32 angles and the same rounded products: most elements are bit-identical;
            // the rest (4-10% here) are where torch's Sleef cos/sin and our correctly rounded
            // ones differ by an ulp.
            let e32 = try f.floats("\(i).expected32")
            let differing = zip(x, e32).filter { $0 != $1 }.count
            XCTAssertLessThanOrEqual(differing * 100, x.count * 15, "\(name) case \(i): \(differing) differ")
        }
    }

    func testDefaultRopeMatchesTransformers() throws { try check("rope_default") }
    func testLlama3RopeMatchesTransformers() throws { try check("rope_llama3") }
    func testLlama3RopeWithMediumBandMatchesTransformers() throws { try check("rope_llama3_odd") }

    func testApplyMatchesReferenceAtOddHalvesAndOffsets() {
        var rng = SeededRandom(seed: 7)
        for (D, T, H, start) in [(2, 1, 1, 0), (18, 5, 3, 7), (34, 9, 2, 2000), (64, 40, 9, 0)] {
            let table = RotaryTable(headDim: D, theta: 10000, scaling: nil, maxPositions: 2048 + 64)
            let x = rng.floats(T * H * D)
            let expected = rotaryReference(x: x.doubles, T: T, H: H, D: D,
                                           inverseFrequencies: table.inverseFrequencies, start: start)
            var y = x
            table.apply(&y, T: T, H: H, start: start)
            assertAllClose(y, expected, atol: 2e-7, rtol: 2e-7, "D \(D) T \(T) start \(start)")
        }
    }
}

final class AttentionTests: XCTestCase {
    func testAttentionMatchesTransformersEager() throws {
        for name in ["attn_gqa_37", "attn_gqa_200", "attn_mha_200", "attn_t1"] {
            let f = try FixtureFile(name)
            let s = try f.ints("shape"), T = s[0], H = s[1], Hkv = s[2], D = s[3]
            var out = [Float](repeating: .nan, count: T * H * D)
            causalAttention(q: try f.floats("q"), k: try f.floats("k"), v: try f.floats("v"),
                            out: &out, T: T, H: H, Hkv: Hkv, D: D)
            assertAllClose(out, try f.doubles("expected64"), atol: 1e-6, rtol: 1e-5, name)
            assertAllClose(out, try f.floats("expected32"), atol: 1e-6, rtol: 1e-5, name)
        }
    }

    /// Sizes around the blocks of query rows (192 rows over the heads of a KV group: 64 per
    /// head at 3 query heads per KV head, 192 at 1, 96 at 2), T = 1, odd head sizes.
    func testAttentionMatchesReferenceAtBlockBoundaries() {
        var rng = SeededRandom(seed: 8)
        let cases = [(1, 1, 1, 1), (1, 6, 2, 16), (63, 6, 2, 5), (64, 3, 1, 7), (65, 3, 1, 7),
                     (129, 6, 2, 9), (191, 2, 2, 4), (193, 2, 2, 4), (97, 4, 2, 3), (40, 1, 1, 33)]
        for (T, H, Hkv, D) in cases {
            let q = rng.floats(T * H * D, scale: 2), k = rng.floats(T * Hkv * D, scale: 2)
            let v = rng.floats(T * Hkv * D)
            let expected = causalAttentionReference(q: q.doubles, k: k.doubles, v: v.doubles, T: T,
                                                    H: H, Hkv: Hkv, D: D)
            var out = [Float](repeating: .nan, count: T * H * D)
            causalAttention(q: q, k: k, v: v, out: &out, T: T, H: H, Hkv: Hkv, D: D)
            assertAllClose(out, expected, atol: 1e-6, rtol: 1e-5, "T \(T) H \(H) Hkv \(Hkv) D \(D)")
        }
    }

    /// Narrowed value heads (V/O pruning): each KV head keeps some of its value dimensions; the
    /// output equals full attention's output at the kept dimensions, laid out head after head.
    func testNarrowedValueHeadsEqualFullAttentionAtTheKeptDimensions() {
        var rng = SeededRandom(seed: 10)
        let T = 150, H = 6, Hkv = 3, D = 8, rep = H / Hkv
        let kept: [[Int]] = [[0, 2, 7], [], [1, 2, 3, 4, 5, 6, 7, 0].sorted()]
        let q = rng.floats(T * H * D, scale: 2), k = rng.floats(T * Hkv * D, scale: 2), v = rng.floats(T * Hkv * D)
        var full = [Float](repeating: .nan, count: T * H * D)
        causalAttention(q: q, k: k, v: v, out: &full, T: T, H: H, Hkv: Hkv, D: D)
        let VW = kept.reduce(0) { $0 + $1.count }
        var narrowV: [Float] = []
        for t in 0..<T { for g in 0..<Hkv { for e in kept[g] { narrowV.append(v[(t * Hkv + g) * D + e]) } } }
        var expected: [Float] = []
        for t in 0..<T { for h in 0..<H { for e in kept[h / rep] { expected.append(full[(t * H + h) * D + e]) } } }
        var out = [Float](repeating: .nan, count: T * rep * VW)
        causalAttention(q: q, k: k, v: narrowV, out: &out, T: T, H: H, Hkv: Hkv, D: D,
                        valueWidths: kept.map(\.count))
        assertAllClose(out, expected.map(Double.init), atol: 1e-6, rtol: 1e-5, "narrowed")
    }

    /// Decoding's one row over a long cache (the sgemm-free path, its KV groups on two workers;
    /// widths that are not multiples of 16, a narrowed and an empty value head) equals the last row
    /// of full causal attention, and one thread gives the same bits as two.
    func testOneCachedRowEqualsTheLastRowOfFullAttention() {
        var rng = SeededRandom(seed: 11)
        let T = 700, H = 6, Hkv = 3, D = 40, rep = H / Hkv
        let widths = [40, 21, 0]
        let q = rng.floats(T * H * D, scale: 2), k = rng.floats(T * Hkv * D, scale: 2), v = rng.floats(T * Hkv * D)
        var full = [Float](repeating: .nan, count: T * H * D)
        causalAttention(q: q, k: k, v: v, out: &full, T: T, H: H, Hkv: Hkv, D: D)
        let VW = widths.reduce(0, +)
        var values: [Float] = []
        for t in 0..<T { for g in 0..<Hkv { values += v[((t * Hkv + g) * D)..<((t * Hkv + g) * D + widths[g])] } }
        var expected: [Double] = []
        for h in 0..<H { for e in 0..<widths[h / rep] { expected.append(Double(full[((T - 1) * H + h) * D + e])) } }
        let lastQuery = Array(q[((T - 1) * H * D)...])
        let before = BLAS.threads
        defer { BLAS.setThreads(before) }
        var outs: [[Float]] = []
        for threads in [1, 2] {
            BLAS.setThreads(threads)
            var out = [Float](repeating: .nan, count: rep * VW)
            cachedAttention(q: lastQuery, keys: k, values: values, out: &out, start: T - 1, rows: 1, H: H, Hkv: Hkv, D: D,
                            valueWidths: widths)
            assertAllClose(out, expected, atol: 1e-5, rtol: 1e-4, "one cached row, \(threads) threads")
            outs.append(out)
        }
        XCTAssertEqual(outs[0], outs[1])
    }

    func testNoHeadsIsANoOp() {
        var out: [Float] = [1, 2, 3]
        causalAttention(q: [Float](), k: [Float](), v: [Float](), out: &out, T: 5, H: 0, Hkv: 0, D: 64)
        XCTAssertEqual(out, [1, 2, 3])
    }

    /// The same inputs give bit-identical outputs on repeated runs and for 1 and 2 threads.
    func testAttentionIsDeterministic() {
        var rng = SeededRandom(seed: 9)
        let T = 300, H = 6, Hkv = 2, D = 16
        let q = rng.floats(T * H * D), k = rng.floats(T * Hkv * D), v = rng.floats(T * Hkv * D)
        func run() -> [Float] {
            var out = [Float](repeating: 0, count: T * H * D)
            causalAttention(q: q, k: k, v: v, out: &out, T: T, H: H, Hkv: Hkv, D: D)
            return out
        }
        let before = BLAS.threads
        defer { BLAS.setThreads(before) }
        BLAS.setThreads(2)
        let a = run(), b = run()
        BLAS.setThreads(1)
        let c = run()
        XCTAssertEqual(a, b)
        XCTAssertEqual(a, c)
    }
}
