import Foundation
import Kernels
import TestSupport
import XCTest

/// Packed attention (a context with its continuations in one pass) against its naive Double
/// reference, and against causal attention over each sequence on its own.
final class PackedAttentionTests: XCTestCase {
    func testMatchesReferenceWithSeveralGroupsAndEmptyContinuations() {
        var rng = SeededRandom(seed: 11)
        for (H, Hkv, D) in [(4, 2, 8), (6, 3, 16), (2, 2, 4)] {
            let groups = [PackedGroup(start: 0, contextLength: 5, continuationLengths: [3, 0, 4]),
                          PackedGroup(start: 12, contextLength: 1, continuationLengths: [2]),
                          PackedGroup(start: 15, contextLength: 9, continuationLengths: [])]
            let R = 24
            let q = rng.floats(R * H * D), k = rng.floats(R * Hkv * D), v = rng.floats(R * Hkv * D)
            var out = [Float](repeating: .nan, count: R * H * D)
            packedAttention(q: q, k: k, v: v, out: &out, groups: groups, H: H, Hkv: Hkv, D: D)
            let expected = packedAttentionReference(q: q.doubles, k: k.doubles, v: v.doubles, groups: groups,
                                                    H: H, Hkv: Hkv, D: D)
            assertAllClose(out, expected, atol: 2e-6, rtol: 1e-5, "H \(H) Hkv \(Hkv) D \(D)")
        }
    }

    /// Each continuation's rows equal causal attention over `context + continuation` alone.
    func testEachContinuationSeesWhatItsOwnSequenceSees() {
        var rng = SeededRandom(seed: 5)
        let H = 4, Hkv = 2, D = 8, P = 6, lengths = [3, 5]
        let R = P + lengths.reduce(0, +)
        let q = rng.floats(R * H * D), k = rng.floats(R * Hkv * D), v = rng.floats(R * Hkv * D)
        var out = [Float](repeating: 0, count: R * H * D)
        packedAttention(q: q, k: k, v: v, out: &out, groups: [PackedGroup(start: 0, contextLength: P, continuationLengths: lengths)],
                        H: H, Hkv: Hkv, D: D)
        var row = P
        for n in lengths {
            func rows(_ x: [Float], _ width: Int) -> [Float] { Array(x[0..<(P * width)]) + Array(x[(row * width)..<((row + n) * width)]) }
            let T = P + n
            var alone = [Float](repeating: 0, count: T * H * D)
            causalAttention(q: rows(q, H * D), k: rows(k, Hkv * D), v: rows(v, Hkv * D), out: &alone, T: T, H: H, Hkv: Hkv, D: D)
            assertAllClose(Array(out[(row * H * D)..<((row + n) * H * D)]), Array(alone[(P * H * D)...]), atol: 1e-6, rtol: 1e-5)
            assertAllClose(Array(out[0..<(P * H * D)]), Array(alone[0..<(P * H * D)]), atol: 1e-6, rtol: 1e-5)
            row += n
        }
    }
}
