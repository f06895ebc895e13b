import Evaluation
import LlamaModel
import ToolSupport

/// `evaluate --tasks`: the zero-shot tasks, a table on stderr and the JSON on stdout.
extension Evaluate {
    func zeroShot(_ model: Model, tasks: [ZeroShotTask]) throws {
        let progress = Progress("evaluate", total: 100, unit: "%", quiet: common.quiet)
        let report = try evaluateZeroShot(model: model, tasks: tasks, limit: limit) { task, done, total in
            let i = tasks.firstIndex(of: task) ?? 0
            progress.update((100 * i + 100 * done / max(total, 1)) / tasks.count)
        }
        progress.finish()
        report.table.forEach(printError)
        if json.json { print(try report.json()) }
    }
}
