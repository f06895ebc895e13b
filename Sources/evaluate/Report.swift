import ArgumentParser
import Evaluation
import Foundation
import LlamaModel
import TensorIO
import ToolSupport

/// `evaluate --report [--compare DENSE]`: size, cost and speed, side by side with ratios.
struct ReportOptions: ParsableArguments {
    @Flag(name: .long, help: "Report parameters, file size, MACs per token, prefill and decode tokens/s, peak memory (measured here) and the OpenBLAS kernels that ran.")
    var report = false

    @Option(name: .long, help: "With --report: the same for this model (e.g. the dense one, measured first in a process of its own), with ratios.")
    var compare: String?

    func validate() throws {
        if compare != nil && !report { throw ValidationError("--compare goes with --report") }
    }
}

extension Evaluate {
    func speedReport(_ model: Model) throws {
        // The comparison runs first, alone, in a child process: each peak memory is then one model's.
        let other = try reports.compare.map(measureInChildProcess)
        var mine = try SpeedReport.measure(model, path: self.model.model)
        mine.peakResidentMB = peakMemoryMB()
        mine.table(compare: other).forEach(printError)
        if json.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(ReportBody(model: mine, compare: other)), as: UTF8.self))
        }
    }

    /// `evaluate --model PATH --report --json` run by this same executable; its report.
    func measureInChildProcess(_ path: String) throws -> SpeedReport {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        process.arguments = ["--model", path, "--report", "--json", "--quiet"]
            + (common.threads.map { ["--threads", String($0)] } ?? [])
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch { throw TensorIOError.io("--compare: cannot run evaluate: \(error)") }
        // The child's standard error is its table or one error line, far below a pipe's 64 KiB, so
        // reading standard output first cannot stall it.
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let messages = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let lastLine = messages.split(separator: "\n").last.map(String.init) ?? ""
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            let kind: FailureKind = switch process.terminationStatus {
            case FailureKind.usage.exitCode: .usage
            case FailureKind.badData.exitCode: .badData
            case FailureKind.missingInput.exitCode: .missingInput
            default: .io
            }
            let message = lastLine.hasPrefix("evaluate: ") ? String(lastLine.dropFirst(10)) : lastLine
            throw TensorIOError(kind, "--compare \(path): \(message.isEmpty ? "evaluate failed (status \(process.terminationStatus))" : message)")
        }
        do {
            return try JSONDecoder().decode(ReportBody.self, from: data).model
        } catch {
            throw TensorIOError.io("--compare \(path): unreadable report from the child process: \(error)")
        }
    }
}

/// `evaluate --report --json`'s output.
struct ReportBody: Codable {
    var model: SpeedReport
    var compare: SpeedReport?
}
