/// Where one attention layer's values lie when value heads may be narrower than the head size
/// (FASP's V/O pruning): KV head g has w_g values, its rows of v_proj follow those of heads
/// 0..<g, and each of its `headsPerGroup` query heads owns w_g consecutive columns of the
/// attention output (the o_proj input), head h = g·rep + j starting at rep·Σ_{g'<g} w_g' + j·w_g.
/// With every w_g = D this is the usual [H, D] layout.
public struct ValueLayout: Sendable, Equatable {
    public let widths: [Int]
    /// Where each KV head's values start in v_proj's rows.
    public let offsets: [Int]
    public let headsPerGroup: Int

    /// The layout of an attention kernel's arguments, checked: H a multiple of Hkv > 0, one width
    /// in 0...D per KV head (nil: every width D).
    static func checked(_ valueWidths: [Int]?, H: Int, Hkv: Int, D: Int) -> ValueLayout {
        precondition(Hkv > 0 && H % Hkv == 0, "query heads \(H) not a multiple of KV heads \(Hkv)")
        let widths = valueWidths ?? [Int](repeating: D, count: Hkv)
        precondition(widths.count == Hkv && widths.allSatisfy { $0 >= 0 && $0 <= D },
                     "value widths \(widths) for \(Hkv) KV heads of size \(D)")
        return ValueLayout(widths: widths, headsPerGroup: H / Hkv)
    }

    public init(widths: [Int], headsPerGroup: Int) {
        var offsets: [Int] = [], sum = 0
        for w in widths { offsets.append(sum); sum += w }
        self.widths = widths
        self.offsets = offsets
        self.headsPerGroup = headsPerGroup
        rowCount = sum
    }

    /// v_proj rows: the widths summed.
    public let rowCount: Int
    /// Attention output columns (o_proj's input width).
    public var columnCount: Int { headsPerGroup * rowCount }

    /// The v_proj rows of KV head g.
    public func rows(ofGroup g: Int) -> Range<Int> { offsets[g]..<(offsets[g] + widths[g]) }

    /// The attention output columns of query head h.
    public func columns(ofHead h: Int) -> Range<Int> {
        let g = h / headsPerGroup
        let start = headsPerGroup * offsets[g] + (h % headsPerGroup) * widths[g]
        return start..<(start + widths[g])
    }
}
