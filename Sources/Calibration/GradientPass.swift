import Foundation
import Kernels
import LlamaModel

// The gradient statistics of `calibrate --gradients` (docs/DESIGN.md "Gradient statistics"):
// with ℓ_n the mean next-token cross-entropy of window n (transformers' labels=input_ids loss of
// that window alone),
//   first order:   G = Σ_n ∇ℓ_n           (LLM-Pruner's weight.grad is the gradient of the mean
//                                          over its batch of equal windows: G / N)
//   second order:  S = Σ_n (∇ℓ_n)²        (LLM-Pruner's acc_grad, its diagonal-Fisher estimate of
//                                          the Hessian, accumulates (∇ℓ_n)²/N: S / N)
// Both are sums over windows, so that shards of the windows add up (`calibrate merge`). First order
// runs batches of windows with each position weighted 1/(T−1), which gives the batch's Σ_n ∇ℓ_n at
// once; second order needs each window's own gradient: one backward per window.

/// The gradient sums of every layer's weights over a run's windows.
public struct GradientSums {
    public var first: ModelGradients
    public var second: ModelGradients?
    public var loss: LossSum
}

extension Calibrator {
    /// Forward and backward over this run's windows (the shard's, if any), in the forward's
    /// batches. `progress(done, total)` counts windows.
    public func gradientSums(second: Bool, progress: ((Int, Int) -> Void)? = nil) throws -> GradientSums {
        let T = windows.length
        guard T >= 2 else { throw CalibrationError("--gradients needs windows of at least 2 tokens", kind: .usage) }
        let runner = Runner(model: model, maxPositions: T)
        try runner.keepLayers()  // read once, not twice per batch
        var first = ModelGradients(zerosLike: model)
        var squares = second ? first : nil
        var one = second ? first : nil
        var loss = LossSum(sum: 0, count: 0)
        let weight = 1 / Float(T - 1)
        func window(_ n: Int) -> [Int32] { Array(windows.ids[n * T..<(n + 1) * T]) }
        let step = second ? 1 : batchWindows
        for start in stride(from: range.lowerBound, to: range.upperBound, by: step) {
            let batch = (start..<min(start + step, range.upperBound)).map(window)
            let l: LossSum
            if second {
                one!.zero()
                l = try runner.lossAndGradients(batch, into: &one!, positionWeight: weight)
                first.add(one!)
                squares!.addSquares(of: one!)
            } else {
                l = try runner.lossAndGradients(batch, into: &first, positionWeight: weight)
            }
            loss.sum += l.sum
            loss.count += l.count
            progress?(start + batch.count - range.lowerBound, range.count)
        }
        try first.requireFinite(what: "gradient")
        try squares?.requireFinite(what: "squared gradient")
        return GradientSums(first: first, second: squares, loss: loss)
    }
}

extension ModelGradients {
    /// self += other, tensor by tensor.
    mutating func add(_ other: ModelGradients) { combine(other) { $0 + $1 } }

    /// self += other², tensor by tensor.
    mutating func addSquares(of other: ModelGradients) { combine(other) { $0 + $1 * $1 } }

    private mutating func combine(_ other: ModelGradients, _ f: (Float, Float) -> Float) {
        func apply(_ a: inout [Float], _ b: [Float]) {
            a.withUnsafeMutableBufferPointer { x in
                b.withUnsafeBufferPointer { y in for i in 0..<x.count { x[i] = f(x[i], y[i]) } }
            }
        }
        func apply(_ a: inout Linear, _ b: Linear) {
            apply(&a.weight, b.weight)
            if a.bias != nil, let bb = b.bias { apply(&a.bias!, bb) }
        }
        apply(&embedding, other.embedding)
        apply(&finalNorm, other.finalNorm)
        if head != nil, let h = other.head { apply(&head!, h) }
        for l in layers.indices {
            apply(&layers[l].inputNorm, other.layers[l].inputNorm)
            apply(&layers[l].postAttentionNorm, other.layers[l].postAttentionNorm)
            for path in LayerWeights.projections { apply(&layers[l][keyPath: path], other.layers[l][keyPath: path]) }
        }
    }

    /// Throws, naming the layer and tensor, at the first NaN or infinity in a projection's
    /// gradient.
    func requireFinite(what: String) throws {
        for (l, layer) in layers.enumerated() {
            for p in Projection.allCases {
                if let i = layer.linear(p).weight.firstIndex(where: { !$0.isFinite }) {
                    throw CalibrationError("\(what) of \(TensorNames.weight(l, p)) is \(layer.linear(p).weight[i]) at element \(i) (layer \(l)): the loss diverged on these windows")
                }
            }
        }
    }
}
