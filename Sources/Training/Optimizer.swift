import Foundation
import LlamaModel

/// The learning-rate schedules of transformers (`get_scheduler`), as multipliers of the base rate
/// at optimizer step k (0-based, the rate step k uses) of n, after w warm-up steps:
/// warm-up k/w while k < w, then
///   linear:   (n − k)/(n − w), floored at 0
///   cosine:   ½(1 + cos(π (k − w)/(n − w)))          (one half-cycle, floored at 0)
///   constant: 1
public enum LearningRateSchedule: String, CaseIterable, Sendable {
    case linear, cosine, constant

    public func multiplier(step k: Int, of n: Int, warmup w: Int) -> Double {
        if k < w { return Double(k) / Double(max(1, w)) }
        switch self {
        case .constant: return 1
        case .linear: return max(0, Double(n - k) / Double(max(1, n - w)))
        case .cosine:
            let progress = Double(k - w) / Double(max(1, n - w))
            return max(0, 0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}

/// AdamW (Loshchilov & Hutter 2019) as `torch.optim.AdamW` computes it, over one flat vector:
///   p ← p·(1 − lr·λ);  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
///   p ← p − (lr/(1−β₁ᵗ)) · m / (√v/√(1−β₂ᵗ) + ε)
/// t = 1 at the first step. Defaults are torch's and transformers' `TrainingArguments`:
/// β₁ 0.9, β₂ 0.999, ε 1e-8, weight decay 0 (transformers' default; torch's own is 0.01).
public final class AdamW {
    public let count: Int
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    public var weightDecay: Float = 0
    /// Steps taken (t of the last step).
    public internal(set) var steps = 0
    /// First and second moments.
    private let first: Buffer, second: Buffer
    public var m: UnsafeMutablePointer<Float> { first.pointer }
    public var v: UnsafeMutablePointer<Float> { second.pointer }

    public init(count: Int) {
        self.count = count
        first = Buffer(count: count)
        second = Buffer(count: count)
    }

    /// Restores the state a checkpoint kept.
    public func restore(steps: Int, m: [Float], v: [Float]) {
        precondition(m.count == count && v.count == count)
        self.steps = steps
        self.m.update(from: m, count: count)
        self.v.update(from: v, count: count)
    }

    /// One update of `parameters` from `gradients` at learning rate `lr`.
    public func step(parameters p: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, lr: Float) {
        steps += 1
        let t = Double(steps)
        let stepSize = Float(Double(lr) / (1 - pow(Double(beta1), t)))
        let correction2 = Float((1 - pow(Double(beta2), t)).squareRoot())
        let decay = 1 - lr * weightDecay
        let b1 = beta1, b2 = beta2, eps = epsilon
        for i in 0..<count {
            p[i] *= decay
            m[i] += (g[i] - m[i]) * (1 - b1)  // torch: exp_avg.lerp_(grad, 1 − β₁)
            v[i] = v[i] * b2 + (1 - b2) * g[i] * g[i]
            p[i] -= stepSize * m[i] / (v[i].squareRoot() / correction2 + eps)
        }
    }
}

/// The global L2 norm of a gradient vector, and its clipping as
/// `torch.nn.utils.clip_grad_norm_(max_norm)` does: scaled by min(1, max/(norm + 1e-6)).
/// Returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ g: UnsafeMutablePointer<Float>, count: Int, maxNorm: Float) -> Double {
    var sum = 0.0
    for i in 0..<count { sum += Double(g[i]) * Double(g[i]) }
    let norm = sum.squareRoot()
    guard maxNorm > 0 else { return norm }
    let coefficient = min(1, Double(maxNorm) / (norm + 1e-6))
    if coefficient < 1 {
        let c = Float(coefficient)
        for i in 0..<count { g[i] *= c }
    }
    return norm
}
