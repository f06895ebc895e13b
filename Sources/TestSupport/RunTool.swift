import Foundation

/// The result of running one of the built tools.
public struct ToolResult {
    public var status: Int32
    public var stdout: Data
    public var stderr: String
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
}

/// Runs a built executable of this package (found beside the test bundle, i.e. in the same
/// `.build/<configuration>` folder) as a user would: arguments, optional standard input, and
/// the exit status, standard output and standard error it gives.
public func runTool(
    _ name: String, _ arguments: [String], stdin: Data? = nil,
    environment: [String: String]? = nil
) throws -> ToolResult {
    let process = Process()
    process.executableURL = toolsDirectory().appendingPathComponent(name)
    process.arguments = arguments
    if let environment {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let outPipe = Pipe(), errPipe = Pipe(), inPipe = Pipe()
    process.standardOutput = outPipe
    process.standardError = errPipe
    process.standardInput = inPipe
    try process.run()
    // Read both streams concurrently so that neither pipe fills and blocks the child.
    let outBox = DataBox(), errBox = DataBox()
    let group = DispatchGroup()
    for (pipe, box) in [(outPipe, outBox), (errPipe, errBox)] {
        group.enter()
        DispatchQueue.global().async {
            box.data = pipe.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
    }
    if let stdin {
        // A tool may refuse its input before reading all of it: a broken pipe is then an error
        // of the write (ignored), not a signal that ends the test process.
        signal(SIGPIPE, SIG_IGN)
        try? inPipe.fileHandleForWriting.write(contentsOf: stdin)
    }
    try? inPipe.fileHandleForWriting.close()
    process.waitUntilExit()
    group.wait()
    return ToolResult(status: process.terminationStatus, stdout: outBox.data,
                      stderr: String(decoding: errBox.data, as: UTF8.self))
}

/// Written by one reader thread, read after `group.wait()`.
private final class DataBox: @unchecked Sendable {
    var data = Data()
}

/// The folder that holds the built executables: the test bundle's folder.
public func toolsDirectory() -> URL {
    let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    var dir = exe.deletingLastPathComponent()
    // On Linux the XCTest runner is `<config>/PruneKitPackageTests.xctest`; on macOS a bundle.
    while dir.path != "/" {
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent("convert").path) {
            return dir
        }
        dir = dir.deletingLastPathComponent()
    }
    return exe.deletingLastPathComponent()
}
