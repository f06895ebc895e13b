import ArgumentParser
import Evaluation
import Foundation
import LlamaModel
import ToolSupport

/// `evaluate --report [--compare DENSE]`: size, cost and speed, side by side with ratios.
struct ReportOptions: ParsableArguments {
    @Flag(name: .long, help: "Report parameters, file size, MACs per token, prefill and decode tokens/s (measured here).")
    var report = false

    @Option(name: .long, help: "With --report: the same for this model (e.g. the dense one), with ratios.")
    var compare: String?

    func validate() throws {
        if compare != nil && !report { throw ValidationError("--compare goes with --report") }
    }
}

extension Evaluate {
    func speedReport(_ model: Model) throws {
        let mine = try SpeedReport.measure(model, path: self.model.model)
        let other = try reports.compare.map { try SpeedReport.measure(try Model.open($0), path: $0) }
        mine.table(compare: other).forEach(printError)
        if json.json {
            struct Body: Encodable { var model: SpeedReport; var compare: SpeedReport? }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(Body(model: mine, compare: other)), as: UTF8.self))
        }
    }
}
