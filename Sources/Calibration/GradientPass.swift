import Foundation
import Kernels
import LlamaModel
import TensorIO

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

/// The gradient sums of every layer's linear weights over a run's windows, and the loss. They are
/// as large as the weights (a 7B model: 26 GB each in F32) and cannot stream — every batch adds
/// to every layer's — so they live in memory up to `memoryLimit` and beyond it in a temporary
/// file that the process touches one layer at a time (`ScratchFloats`): a 7B model's sums cost
/// disk, not memory (docs/DESIGN.md "Memory at scale").
public final class GradientSums {
    /// Sums (first and second order together) larger than this go to a temporary file.
    public static let memoryLimit = 2 << 30

    public let second: Bool
    public internal(set) var loss = LossSum(sum: 0, count: 0)
    let sums: ScratchFloats
    let squares: ScratchFloats?
    /// Per layer and projection (`Projection.allCases` order): the first element and the shape.
    let slots: [[(offset: Int, rows: Int, cols: Int)]]

    init(model: Model, second: Bool, memoryLimit: Int = GradientSums.memoryLimit) throws {
        self.second = second
        let c = model.config
        var offset = 0
        slots = (0..<c.numLayers).map { l in
            Projection.allCases.map { p in
                let (rows, cols) = TensorNames.projectionShape(p, config: c, layer: l)
                defer { offset += rows * cols }
                return (offset, rows, cols)
            }
        }
        let perSum = memoryLimit / (second ? 2 : 1)
        sums = try ScratchFloats(count: offset, memoryLimit: perSum, name: "gradient sums")
        squares = second ? try ScratchFloats(count: offset, memoryLimit: perSum, name: "squared gradient sums") : nil
    }

    /// Whether the sums live in a temporary file.
    public var onDisk: Bool { sums.onDisk }

    /// The lowest layer (then projection) whose sum stopped being finite, as an error naming it.
    private var nonFinite: (layer: Int, projection: Int, error: CalibrationError)?

    /// Throws the lowest layer's non-finite sum, if any: the layer where a NaN in the weights or
    /// the inputs first shows (every layer above it is NaN too).
    func requireFinite() throws {
        if let nonFinite { throw nonFinite.error }
    }

    /// Adds one batch's (first order) or one window's (second order) gradients of layer `l`, and
    /// their squares, noting a sum that stops being finite (`requireFinite`).
    func add(layer l: Int, _ g: LayerWeights) {
        for (k, p) in Projection.allCases.enumerated() {
            let slot = slots[l][k], n = slot.rows * slot.cols
            let range = slot.offset..<(slot.offset + n)
            let bad = g.linear(p).weight.withUnsafeBufferPointer { src -> (Int, Float, Bool)? in
                // Adds the gradient (or its square) into a store; the first element that is not finite.
                func accumulate(_ store: ScratchFloats, squared: Bool) -> (Int, Float, Bool)? {
                    store.withSlice(range) { dst -> (Int, Float, Bool)? in
                        var firstBad: (Int, Float, Bool)?
                        for i in 0..<n {
                            dst[i] += squared ? src[i] * src[i] : src[i]
                            if firstBad == nil && !dst[i].isFinite { firstBad = (i, dst[i], squared) }
                        }
                        return firstBad
                    }
                }
                return accumulate(sums, squared: false) ?? squares.flatMap { accumulate($0, squared: true) }
            }
            if let (i, value, squared) = bad, (l, k) < (nonFinite?.layer ?? .max, nonFinite?.projection ?? .max) {
                nonFinite = (l, k, CalibrationError("\(squared ? "squared gradient" : "gradient") of \(TensorNames.weight(l, p)) is \(value) at element \(i) (layer \(l)): the loss diverged on these windows"))
            }
        }
    }

    /// Layer `l`'s sums (and sums of squares) as weight-shaped gradients (linear weights only).
    public func layer(_ l: Int) -> (first: LayerWeights, second: LayerWeights?) {
        func read(_ store: ScratchFloats) -> LayerWeights {
            let linears = Projection.allCases.enumerated().map { k, _ -> Linear in
                let slot = slots[l][k], n = slot.rows * slot.cols
                let weight = store.withSlice(slot.offset..<(slot.offset + n)) { Array($0) }
                return Linear(weight: weight, bias: nil, outFeatures: slot.rows, inFeatures: slot.cols)
            }
            return LayerWeights(inputNorm: [], q: linears[0], k: linears[1], v: linears[2], o: linears[3],
                                postAttentionNorm: [], gate: linears[4], up: linears[5], down: linears[6])
        }
        return (read(sums), squares.map(read))
    }
}

extension Calibrator {
    /// Forward and backward over this run's windows (the shard's, if any), in the forward's
    /// batches. `progress(done, total)` counts windows.
    public func gradientSums(second: Bool, memoryLimit: Int = GradientSums.memoryLimit,
                             progress: ((Int, Int) -> Void)? = nil) throws -> GradientSums {
        let T = windows.length
        guard T >= 2 else { throw CalibrationError("--gradients needs windows of at least 2 tokens", kind: .usage) }
        let runner = Runner(model: model, maxPositions: T)
        try runner.keepLayers()  // read once, not twice per batch (when they fit: Runner.keepLimit)
        let result = try GradientSums(model: model, second: second, memoryLimit: memoryLimit)
        let weight = 1 / Float(T - 1)
        func window(_ n: Int) -> [Int32] { Array(windows.ids[n * T..<(n + 1) * T]) }
        // Second order needs each window's own gradient (its square), first order a batch's sum.
        let step = second ? 1 : batchWindows
        for start in stride(from: range.lowerBound, to: range.upperBound, by: step) {
            let batch = (start..<min(start + step, range.upperBound)).map(window)
            let l = try runner.lossAndLayerGradients(batch, positionWeight: weight) { result.add(layer: $0, $1) }
            try result.requireFinite()
            result.loss.sum += l.sum
            result.loss.count += l.count
            progress?(start + batch.count - range.lowerBound, range.count)
        }
        return result
    }
}
