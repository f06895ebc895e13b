import Foundation

/// The loss curves of a run as an SVG chart: the training loss of every step (blue) and the
/// held-out loss at each evaluation (orange points joined), against the step.
public enum LossPlot {
    public static func svg(history: [StepRecord], evaluations: [(step: Int, loss: Double)], title: String) -> String {
        let w = 640.0, h = 320.0, left = 50.0, right = 20.0, top = 30.0, bottom = 40.0
        let train = history.map { (Double($0.step), $0.loss) }, held = evaluations.map { (Double($0.step), $0.loss) }
        let all = (train + held).filter { $0.1.isFinite }
        let maxStep = max(1, all.map(\.0).max() ?? 1)
        var lo = all.map(\.1).min() ?? 0, hi = all.map(\.1).max() ?? 1
        if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
        func x(_ s: Double) -> Double { left + (w - left - right) * s / maxStep }
        func y(_ l: Double) -> Double { top + (h - top - bottom) * (hi - l) / (hi - lo) }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func path(_ points: [(Double, Double)]) -> String {
            points.map { "\(f(x($0.0))),\(f(y($0.1)))" }.joined(separator: " ")
        }
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" font-family="sans-serif" font-size="11">
            <text x="\(f(left))" y="16">\(escape(title)): training loss (blue), held-out loss (orange)</text>
            <line x1="\(f(left))" y1="\(f(h - bottom))" x2="\(f(w - right))" y2="\(f(h - bottom))" stroke="#444"/>
            <line x1="\(f(left))" y1="\(f(top))" x2="\(f(left))" y2="\(f(h - bottom))" stroke="#444"/>
            <text x="\(f(w / 2))" y="\(f(h - 8))" text-anchor="middle">step</text>

            """
        for i in 0...4 {
            let l = lo + (hi - lo) * Double(i) / 4
            out += "<text x=\"\(f(left - 4))\" y=\"\(f(y(l) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", l))</text>\n"
            let s = maxStep * Double(i) / 4
            out += "<text x=\"\(f(x(s)))\" y=\"\(f(h - bottom + 14))\" text-anchor=\"middle\">\(Int(s.rounded()))</text>\n"
        }
        if !train.isEmpty {
            out += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.2\" points=\"\(path(train))\"/>\n"
        }
        if !held.isEmpty {
            out += "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"1.5\" points=\"\(path(held))\"/>\n"
            for p in held { out += "<circle cx=\"\(f(x(p.0)))\" cy=\"\(f(y(p.1)))\" r=\"2.5\" fill=\"#ff7f0e\"/>\n" }
        }
        return out + "</svg>\n"
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
