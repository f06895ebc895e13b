import Foundation

/// Progress on standard error: a bar with rate and ETA when stderr is a terminal, a plain line
/// every few seconds otherwise (logs stay readable), nothing with --quiet.
public final class Progress {
    private let label: String
    /// Settable for a count known only once the work starts.
    public var total: Int
    private let unit: String
    private let quiet: Bool
    private let isTerminal: Bool
    private let start = Date()
    private var lastPrint = Date.distantPast
    private var lastPrinted = -1
    private(set) public var done = 0
    /// Shown after the counts (e.g. the current loss).
    public var detail = ""

    public init(_ label: String, total: Int, unit: String = "", quiet: Bool = false) {
        self.label = label
        self.total = max(total, 0)
        self.unit = unit
        self.quiet = quiet
        self.isTerminal = isatty(STDERR_FILENO) != 0
    }

    public func advance(by n: Int = 1) { update(done + n) }

    public func update(_ value: Int) {
        done = value
        guard !quiet else { return }
        let now = Date()
        let interval: TimeInterval = isTerminal ? 0.1 : 5
        if now.timeIntervalSince(lastPrint) < interval && done < total { return }
        lastPrint = now
        lastPrinted = done
        emit(final: false)
    }

    public func finish() {
        guard !quiet, isTerminal || lastPrinted != done else { return }
        emit(final: true)
    }

    private func emit(final: Bool) {
        let elapsed = Date().timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let rateText = unit.isEmpty ? "" : String(format: " %.1f %@/s", rate, unit)
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        var eta = ""
        if !final, rate > 0, total > done {
            eta = " ETA " + Self.clock(Double(total - done) / rate)
        }
        let counts = "\(done)/\(total)"
        if isTerminal {
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "█", count: filled)
                + String(repeating: "·", count: width - filled)
            let line = "\r\(label) [\(bar)] \(counts)\(detail)\(rateText) \(Self.clock(elapsed))\(eta)\u{1B}[K"
            FileHandle.standardError.write(Data((line + (final ? "\n" : "")).utf8))
        } else {
            let pct = String(format: "%.0f%%", fraction * 100)
            printError("\(label): \(counts) (\(pct))\(detail)\(rateText) \(Self.clock(elapsed))\(eta)")
        }
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600
            ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
            : String(format: "%d:%02d", s / 60, s % 60)
    }
}
