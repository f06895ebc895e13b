// prunekit-bench: throughput of the kernels against the machine's own BLAS peak.
//
//   prunekit-bench sgemm [--size N] [--M m --N n --K k] [--threads t] [--repeats r]
//       GFLOP/s of a large square sgemm (N = 2048): the machine figure other benchmarks divide by;
//       with --M/--N/--K, of x[M, K] · w[N, K]ᵀ (a linear layer's shape).
//   prunekit-bench attention [--T 2048] [--H 9] [--Hkv 3] [--D 64] [--threads t] [--repeats r]
//       GFLOP/s of causalAttention, counting the causal FLOPs 4·T²·H·D/2.
//   prunekit-bench elementwise [--T 2048] [--C 576] [--F 1536] [--H 9] [--D 64] [--V 49152]
//       milliseconds of rmsNorm, RoPE, swiglu and crossEntropy at model sizes.
//   prunekit-bench copy [--MB 512] [--threads t] [--repeats r]
//       memory bandwidth of a large copy (bytes read + written per second, as STREAM counts it)
//       and of a large read (a sum): the yardsticks of decoding, which reads every weight once per token.
//   prunekit-bench backward MODEL [--T 128] [--N 16] [--keep 0|1] [--threads t]
//       tokens/s of forward + backward of the language-model loss (Backward.swift).
// Every figure is the best of `repeats` runs after one warm-up.
import Foundation
import Kernels

struct Options {
    var values: [String: Int] = [:]
    init(_ args: ArraySlice<String>) throws {
        var it = args.makeIterator()
        while let key = it.next() {
            guard key.hasPrefix("--"), let raw = it.next(), let value = Int(raw) else {
                throw UsageError("expected --name INTEGER, got '\(key)'")
            }
            values[String(key.dropFirst(2))] = value
        }
    }
    func int(_ name: String, _ fallback: Int) -> Int { values[name] ?? fallback }
}

struct UsageError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func seconds(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
}

func best(_ repeats: Int, _ body: () -> Void) -> Double {
    body()
    return (0..<max(1, repeats)).map { _ in seconds(body) }.min()!
}

/// Uniform values in [−scale, scale) from a fixed-seed 64-bit LCG (the system generator makes a
/// system call per value, which would dominate the setup).
func randomBuffer(_ n: Int, scale: Float = 1) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15 &* UInt64(n + 1)
    for i in 0..<n {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        p[i] = (Float(state >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
    return p
}

func sgemmBench(_ o: Options) {
    let n = o.int("size", 2048), r = o.int("repeats", 5)
    let M = o.int("M", n), N = o.int("N", n), K = o.int("K", n)
    // --copies n: cycle through n weight matrices, so that a small product reads them from memory
    // (as decoding does) rather than from cache; the figure is per product.
    let copies = max(1, o.int("copies", 1))
    let a = randomBuffer(M * K), c = randomBuffer(M * N)
    let bs = (0..<copies).map { _ in randomBuffer(N * K) }
    let t = best(r) {
        for b in bs {
            BLAS.linear(x: a, w: b, y: c, T: M, C: K, F: N)  // x[M, K] · w[N, K]ᵀ, as the model calls it
        }
    } / Double(copies)
    let shape = M == N && N == K ? "N=\(n)" : "M=\(M) N=\(N) K=\(K)"
    print(String(format: "sgemm %@ threads=%d: %.1f GFLOP/s (%.2f ms)", shape, BLAS.threads,
                 2 * Double(M * N * K) / t * 1e-9, t * 1e3))
}

func attentionBench(_ o: Options) {
    let T = o.int("T", 2048), H = o.int("H", 9), Hkv = o.int("Hkv", 3), D = o.int("D", 64)
    let r = o.int("repeats", 5)
    let q = randomBuffer(T * H * D), k = randomBuffer(T * Hkv * D), v = randomBuffer(T * Hkv * D)
    let out = randomBuffer(T * H * D)
    let t = best(r) { causalAttention(q: q, k: k, v: v, out: out, T: T, H: H, Hkv: Hkv, D: D) }
    let flops = 4 * Double(T) * Double(T) * Double(H * D) / 2
    print(String(format: "attention T=%d H=%d Hkv=%d D=%d threads=%d: %.1f GFLOP/s (%.2f ms)",
                 T, H, Hkv, D, BLAS.threads, flops / t * 1e-9, t * 1e3))
}

func copyBench(_ o: Options) {
    let megabytes = o.int("MB", 512), r = o.int("repeats", 5)
    let n = megabytes << 18, parts = BLAS.threads
    let a = randomBuffer(n), b = randomBuffer(n)
    let t = best(r) {
        DispatchQueue.concurrentPerform(iterations: parts) { i in
            let lo = n * i / parts, hi = n * (i + 1) / parts
            (b + lo).update(from: a + lo, count: hi - lo)
        }
    }
    print(String(format: "copy %d MB threads=%d: %.2f GB/s (bytes read + written) (%.2f ms)", megabytes, parts,
                 2 * Double(n * 4) / t * 1e-9, t * 1e3))
    var sums = [Float](repeating: 0, count: parts)
    let tr = best(r) {
        sums.withUnsafeMutableBufferPointer { out in
            DispatchQueue.concurrentPerform(iterations: parts) { i in
                let lo = n * i / parts, hi = n * (i + 1) / parts
                var acc = SIMD16<Float>(repeating: 0)
                var j = lo
                while j + 16 <= hi {
                    acc += UnsafeRawPointer(a + j).loadUnaligned(as: SIMD16<Float>.self)
                    j += 16
                }
                out[i] = acc.sum()
            }
        }
    }
    print(String(format: "read %d MB threads=%d: %.2f GB/s (%.2f ms; sum %.1f)", megabytes, parts,
                 Double(n * 4) / tr * 1e-9, tr * 1e3, sums.reduce(0, +)))
}

func elementwiseBench(_ o: Options) {
    let T = o.int("T", 2048), C = o.int("C", 576), F = o.int("F", 1536)
    let H = o.int("H", 9), D = o.int("D", 64), V = o.int("V", 49152), r = o.int("repeats", 5)
    let x = randomBuffer(T * C), w = randomBuffer(C), y = randomBuffer(T * C)
    let g = randomBuffer(T * F, scale: 4), u = randomBuffer(T * F), s = randomBuffer(T * F)
    let qh = randomBuffer(T * H * D), logits = randomBuffer(T * V, scale: 8)
    let table = RotaryTable(headDim: D, theta: 10000, scaling: nil, maxPositions: T)
    let targets = (0..<T).map { Int32($0 * 7919 % V) }
    func report(_ name: String, _ t: Double) {
        print(String(format: "%@: %.3f ms", name, t * 1e3))
    }
    report("rmsNorm [\(T), \(C)]", best(r) {
        rmsNorm(x: x, weight: w, eps: 1e-5, out: y, T: T, C: C)
    })
    report("rotary [\(T), \(H), \(D)]", best(r) { table.apply(qh, T: T, H: H) })
    report("swiglu [\(T), \(F)]", best(r) { swiglu(gate: g, up: u, out: s, count: T * F) })
    report("add [\(T), \(C)]", best(r) { add(y, x, count: T * C) })
    report("crossEntropy [\(T), \(V)]", best(r) {
        _ = targets.withUnsafeBufferPointer {
            crossEntropy(logits: logits, targets: $0.baseAddress!, T: T, V: V)
        }
    })
}

BLAS.reexecWithTheCPUsKernels()
let args = CommandLine.arguments
do {
    guard args.count >= 2 else { throw UsageError("missing command") }
    let positional = args[1] == "backward" ? 1 : 0  // backward MODEL [options]
    guard args.count >= 2 + positional else { throw UsageError("missing MODEL") }
    let options = try Options(args.dropFirst(2 + positional))
    if let t = options.values["threads"] {
        guard t >= 1 else { throw UsageError("--threads must be at least 1") }
        BLAS.setThreads(t)
    }
    switch args[1] {
    case "sgemm": sgemmBench(options)
    case "attention": attentionBench(options)
    case "elementwise": elementwiseBench(options)
    case "copy": copyBench(options)
    case "backward": try backwardBench(args[2], options)
    default: throw UsageError("unknown command '\(args[1])'")
    }
} catch {
    FileHandle.standardError.write(Data("""
        prunekit-bench: \(error)
        usage: prunekit-bench sgemm [--size N] [--threads t] [--repeats r]
               prunekit-bench attention [--T 2048] [--H 9] [--Hkv 3] [--D 64] [--threads t]
               prunekit-bench elementwise [--T 2048] [--C 576] [--F 1536] [--H 9] [--D 64] [--V 49152]
               prunekit-bench copy [--MB 512] [--threads t]
               prunekit-bench backward MODEL [--T 128] [--N 16] [--keep 0|1] [--threads t]

        """.utf8))
    exit(64)
}
