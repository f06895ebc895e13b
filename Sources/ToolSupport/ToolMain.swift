import ArgumentParser
import Foundation
import Kernels
import TensorIO

public enum PruneKit {
    public static let version = "0.1.0"
}

/// Standard error, unbuffered, for diagnostics and progress (standard output carries only the
/// artifact or `--json`).
public func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

extension ParsableCommand {
    /// A tool's entry point: first the kernels this CPU supports (`BLAS.reexecWithTheCPUsKernels`, which may
    /// re-execute the program before anything is read), then the command's `main()`.
    public static func runAsTool() {
        BLAS.reexecWithTheCPUsKernels()
        main()
    }
}

/// Runs a tool's body: a `DiagnosedError` becomes one line `tool: message` on stderr and the
/// exit code of its kind (64 usage, 65 bad data, 66 missing input, 74 I/O).
public func runToolBody(_ tool: String, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as DiagnosedError {
        printError("\(tool): \(e.description)")
        throw ExitCode(e.kind.exitCode)
    } catch let e as ExitCode {
        throw e
    } catch let e as CleanExit {
        throw e
    } catch {
        printError("\(tool): \(error)")
        throw ExitCode(1)
    }
}

/// A usage error raised after parsing (exit 64).
public struct UsageError: DiagnosedError {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var kind: FailureKind { .usage }
    public var description: String { message }
}

/// The full command line, as recorded in every output file's metadata.
public func argumentsJSON() -> String {
    let args = CommandLine.arguments
    guard let data = try? JSONSerialization.data(withJSONObject: args, options: []) else {
        return "[]"
    }
    return String(decoding: data, as: UTF8.self)
}

/// The metadata every tool writes: producer, version, arguments.
public func standardMetadata(tool: String) -> [String: String] {
    ["producer": tool, "version": PruneKit.version, "arguments": argumentsJSON()]
}

/// Refuses to write a binary artifact to a terminal.
public func checkBinaryOutput(_ path: String) throws {
    if path == "-" && isatty(STDOUT_FILENO) != 0 {
        throw UsageError("refusing to write a binary file to a terminal; use -o FILE or a pipe")
    }
}

/// Options shared by every tool: `--threads` (matrix products and kernels) and `--quiet` (no
/// progress or summary on standard error).
public struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Threads for matrix products and kernels (default: all cores).")
    public var threads: Int?

    @Flag(name: .long, help: "No progress or summary on standard error (evaluate still prints its result table there).")
    public var quiet = false

    public init() {}

    public func validate() throws {
        if let t = threads, t < 1 || t > 1024 {
            throw ValidationError("--threads must be in 1…1024")
        }
    }
}

/// `--model`: the model a tool reads, in any of its three forms.
public struct ModelOption: ParsableArguments {
    @Option(name: .long, help: "The model: a GGUF file, a Hugging Face directory, a PruneKit model file, or - (standard input).")
    public var model: String

    public init() {}
}

/// `-o/--output`: where a tool writes its artifact.
public struct OutputOption: ParsableArguments {
    @Option(name: [.short, .long], help: "Output file (a .st.zst name is compressed), or - for standard output.")
    public var output: String

    public init() {}

    /// Refuses to write a binary artifact to a terminal.
    public func checkBinary() throws { try checkBinaryOutput(output) }
}

/// `--json`: the result as one JSON object on standard output.
public struct JSONOption: ParsableArguments {
    @Flag(name: .long, help: "Print the result as JSON on standard output.")
    public var json = false

    public init() {}
}

/// Runs a tool's body with the common options applied (threads, interrupt clean-up of partial
/// outputs) and its errors mapped to one stderr line and an exit code (see `runToolBody`).
public func runTool(_ tool: String, _ common: CommonOptions?, _ body: () throws -> Void) throws {
    try runToolBody(tool) {
        installInterruptCleanup()
        if let t = common?.threads { BLAS.setThreads(t) }
        try body()
    }
}

/// The process's peak resident memory so far (VmHWM of /proc/self/status), in MB; 0 if unknown.
public func peakMemoryMB() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
    return 0
}
