import Kernels

// Dimension legend as in DecoderBlock.swift: R rows (whole windows of T tokens), C hidden, H/Hkv
// heads/KV heads, D head size, VW value rows, OW attention output width, F MLP width.

/// Gradient buffers of one block's activations over R rows, grown as needed.
final class BlockGradients {
    private(set) var normed = Buffer()  // [R, C] d(normed input), of either norm in turn
    private(set) var q = Buffer()  // [R, H·D]
    private(set) var k = Buffer()  // [R, Hkv·D]
    private(set) var v = Buffer()  // [R, VW]
    private(set) var heads = Buffer()  // [R, OW]
    private(set) var gate = Buffer()  // [R, F]
    private(set) var up = Buffer()  // [R, F]
    private(set) var hidden = Buffer()  // [R, F]
    let adapterRows = Buffer()  // [R, r] an adapter's du
    let normWeight = Buffer()  // [C] a frozen norm's unused weight gradient

    func reserve(rows R: Int, C: Int, H: Int, Hkv: Int, D: Int, VW: Int, OW: Int, F: Int) {
        normed.reserve(R * C)
        q.reserve(R * H * D)
        k.reserve(R * Hkv * D)
        v.reserve(R * VW)
        heads.reserve(R * OW)
        gate.reserve(R * F)
        up.reserve(R * F)
        hidden.reserve(R * F)
        normWeight.reserve(C)
    }
}

/// The backward of `linear` + bias: dx (+)= dy·W; dW += dyᵀ·x; db += Σ_rows dy. dx nil: not
/// wanted. x: [R, in]; dy: [R, out]; dx: [R, in].
func applyLinearBackward(_ layer: Linear, gradient g: inout Linear, x: UnsafePointer<Float>,
                         dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, rows R: Int) {
    let out = layer.outFeatures, inF = layer.inFeatures
    if out == 0 || R == 0 { return }
    if inF > 0 {
        layer.weight.withUnsafeBufferPointer { w in
            g.weight.withUnsafeMutableBufferPointer { dw in
                BLAS.linearBackward(dy: dy, x: x, w: w.baseAddress!, dx: dx, dw: dw.baseAddress!, T: R, C: inF, F: out)
            }
        }
    }
    if g.bias != nil {
        g.bias!.withUnsafeMutableBufferPointer { addBiasBackward(dy: dy, dbias: $0.baseAddress!, T: R, F: out) }
    }
}

/// The backward of `runBlock` over whole windows of T tokens, from the activations a recording
/// scratch `s` kept of the same rows. On entry dx: [R, C] holds the gradient of the block's
/// output; on return, that of its input. The weights' gradients are added to `g` when
/// `weightGradients` (otherwise the weights are frozen and `g` is not touched), the adapters'
/// to `adapters.gradients`.
/// Each step undoes the forward line of the same equation, in reverse:
///   x += o_proj(attention(rope(q(n₁(x))), rope(k(n₁(x))), v(n₁(x))))
///   x += down_proj(silu(gate(n₂(x))) · up(n₂(x)))
func blockBackward(_ w: LayerWeights, gradient g: inout LayerWeights, weightGradients: Bool = true,
                   adapters: LoRAAdapters? = nil, dx: UnsafeMutablePointer<Float>, rows R: Int,
                   windowLength T: Int, config c: LlamaConfig, layer l: Int, rotary: RotaryTable,
                   activations s: BlockScratch, scratch d: BlockGradients) {
    precondition(s.recording, "the backward needs a recording forward")
    precondition(T > 0 && R % T == 0, "rows must be whole windows")
    let C = c.hiddenSize, D = c.headDim
    let H = c.headCounts[l], Hkv = c.kvHeadCounts[l], F = c.ffnWidths[l]
    let VW = c.valueRows(layer: l), OW = c.attentionOutputWidth(layer: l)
    d.reserve(rows: R, C: C, H: H, Hkv: Hkv, D: D, VW: VW, OW: OW, F: F)
    s.reserve(rows: R, C: C, H: H, Hkv: Hkv, D: D, VW: VW, OW: OW, F: F)
    let dn = d.normed.pointer
    let eps = Float(c.rmsNormEps)
    // y = p(x) (+ its adapter): dx += dy·W (+ the adapter's), dW (when wanted) and the adapter's dA, dB.
    func project(_ p: Projection, x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        let layer = w.linear(p)
        if weightGradients {
            applyLinearBackward(layer, gradient: &g[keyPath: LayerWeights.projections[p.index]], x: x, dy: dy, dx: dx,
                                rows: R)
        } else if layer.outFeatures > 0 && layer.inFeatures > 0 {
            layer.weight.withUnsafeBufferPointer {
                BLAS.linearBackward(dy: dy, x: x, w: $0.baseAddress!, dx: dx, dw: nil, T: R, C: layer.inFeatures,
                                    F: layer.outFeatures)
            }
        }
        adapters?.backward(layer: l, p, x: x, dy: dy, dx: dx, rows: R, u: s.adapterRows[p.index], du: d.adapterRows,
                           scratch: s.adapterInput)
    }
    func normBackward(_ weight: [Float], _ dweight: inout [Float], x: UnsafePointer<Float>, rstd: UnsafePointer<Float>) {
        weight.withUnsafeBufferPointer { weight in
            if weightGradients {
                dweight.withUnsafeMutableBufferPointer {
                    rmsNormBackward(dout: dn, x: x, weight: weight.baseAddress!, rstd: rstd, dx: dx,
                                    dweight: $0.baseAddress!, T: R, C: C)
                }
            } else {
                rmsNormBackward(dout: dn, x: x, weight: weight.baseAddress!, rstd: rstd, dx: dx,
                                dweight: d.normWeight.pointer, T: R, C: C)
            }
        }
    }
    // The forward's transient values, computed again from what was kept (the same bits).
    w.inputNorm.withUnsafeBufferPointer {
        rmsNorm(x: s.input.pointer, weight: $0.baseAddress!, eps: eps, out: s.normed.pointer, T: R, C: C)
    }
    w.postAttentionNorm.withUnsafeBufferPointer {
        rmsNorm(x: s.middle.pointer, weight: $0.baseAddress!, eps: eps, out: s.normed2.pointer, T: R, C: C)
    }
    swiglu(gate: s.gate.pointer, up: s.up.pointer, out: s.hidden.pointer, count: R * F)

    // x += down_proj(hidden): dx flows on unchanged (the residual); dhidden = dx·W_down
    d.hidden.pointer.update(repeating: 0, count: R * F)
    project(.down, x: s.hidden.pointer, dy: dx, dx: d.hidden.pointer)
    // hidden = silu(gate)·up
    d.gate.pointer.update(repeating: 0, count: R * F)
    d.up.pointer.update(repeating: 0, count: R * F)
    swigluBackward(dout: d.hidden.pointer, gate: s.gate.pointer, up: s.up.pointer, dgate: d.gate.pointer,
                   dup: d.up.pointer, count: R * F)
    // gate = gate_proj(n₂), up = up_proj(n₂)
    dn.update(repeating: 0, count: R * C)
    project(.gate, x: s.normed2.pointer, dy: d.gate.pointer, dx: dn)
    project(.up, x: s.normed2.pointer, dy: d.up.pointer, dx: dn)
    // n₂ = post_attention_layernorm(x after attention)
    normBackward(w.postAttentionNorm, &g.postAttentionNorm, x: s.middle.pointer, rstd: s.rstd2.pointer)
    // x += o_proj(heads)
    d.heads.pointer.update(repeating: 0, count: R * OW)
    project(.o, x: s.heads.pointer, dy: dx, dx: d.heads.pointer)
    dn.update(repeating: 0, count: R * C)
    if H > 0 {
        // heads = attention(q, k, v) per window; q, k were rotated in place after their projections
        d.q.pointer.update(repeating: 0, count: R * H * D)
        d.k.pointer.update(repeating: 0, count: R * Hkv * D)
        d.v.pointer.update(repeating: 0, count: R * VW)
        for start in stride(from: 0, to: R, by: T) {
            let dq = d.q.pointer + start * H * D, dk = d.k.pointer + start * Hkv * D
            causalAttentionBackward(dout: d.heads.pointer + start * OW, q: s.q.pointer + start * H * D,
                                    k: s.k.pointer + start * Hkv * D, v: s.v.pointer + start * VW,
                                    lse: s.lse.pointer + start * H, dq: dq, dk: dk, dv: d.v.pointer + start * VW,
                                    T: T, H: H, Hkv: Hkv, D: D, valueWidths: c.valueWidths?[l])
            rotary.applyBackward(dq, T: T, H: H)
            rotary.applyBackward(dk, T: T, H: Hkv)
        }
        // q, k, v = projections of n₁
        project(.q, x: s.normed.pointer, dy: d.q.pointer, dx: dn)
        project(.k, x: s.normed.pointer, dy: d.k.pointer, dx: dn)
        project(.v, x: s.normed.pointer, dy: d.v.pointer, dx: dn)
    }
    // n₁ = input_layernorm(x)
    normBackward(w.inputNorm, &g.inputNorm, x: s.input.pointer, rstd: s.rstd1.pointer)
}
