import Foundation

/// The per-layer table on stderr and the SVG chart of a plan.
public enum PlanPlot {
    static func keptFraction(_ p: LayerPlan, _ s: LayerShape) -> Double {
        let total = s.parameters
        guard total > 0 else { return 1 }
        return Double(s.kept(p).parameters) / Double(total)
    }

    public static func table(_ plan: Plan, shapes: [LayerShape], ratio: Double) -> String {
        var lines = ["layer  heads   kv   channels  kept"]
        for (l, p) in plan.layers.enumerated() {
            let s = shapes[l]
            let f = keptFraction(p, s)
            let bar = String(repeating: "█", count: Int((f * 30).rounded())) + String(repeating: "·", count: 30 - Int((f * 30).rounded()))
            var line = String(format: "%5d  %2d/%-2d  %d/%d  %5d/%-5d %@ %5.1f%%", l, p.keptHeads.count, s.H,
                              p.keptKVHeads.count, s.Hkv, p.keptChannels.count, s.F, bar, 100 * f)
            if let rows = p.keptValueDims { line += "  values \(rows.count)/\(s.valueRows)" }
            lines.append(line)
        }
        lines.append(String(format: "removed %d of %d decoder-layer linear parameters: %.4f (asked %.4f)",
                            plan.removedParameters, plan.totalParameters, plan.achieved, ratio))
        return lines.joined(separator: "\n")
    }

    public static func svg(_ plan: Plan, shapes: [LayerShape]) -> String {
        let L = plan.layers.count, barW = 18, gap = 4, h = 200, left = 40, top = 20
        let width = left + L * (barW + gap) + 20
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(h + 70)" font-family="sans-serif" font-size="10">
            <text x="\(left)" y="12">kept fraction per layer: attention (blue), MLP (orange); removed \(String(format: "%.1f", 100 * plan.achieved))% of decoder-layer parameters</text>

            """
        for (l, p) in plan.layers.enumerated() {
            let s = shapes[l]
            // Attention: the kept share of heads, or of value rows for a V/O plan.
            let a = s.H == 0 ? 0 : p.keptValueDims.map { Double($0.count) / Double(max(s.valueRows, 1)) }
                ?? Double(p.keptHeads.count) / Double(s.H)
            let m = s.F > 0 ? Double(p.keptChannels.count) / Double(s.F) : 0
            let x = left + l * (barW + gap)
            let ah = Int(a * Double(h)), mh = Int(m * Double(h))
            out += "<rect x=\"\(x)\" y=\"\(top + h - ah)\" width=\"\(barW / 2)\" height=\"\(ah)\" fill=\"#4878d0\"/>\n"
            out += "<rect x=\"\(x + barW / 2)\" y=\"\(top + h - mh)\" width=\"\(barW / 2)\" height=\"\(mh)\" fill=\"#ee854a\"/>\n"
            out += "<text x=\"\(x + 2)\" y=\"\(top + h + 14)\">\(l)</text>\n"
        }
        out += "<line x1=\"\(left - 2)\" y1=\"\(top)\" x2=\"\(left - 2)\" y2=\"\(top + h)\" stroke=\"black\"/>\n"
        out += "<text x=\"4\" y=\"\(top + 8)\">100%</text><text x=\"14\" y=\"\(top + h)\">0%</text>\n</svg>\n"
        return out
    }
}
