import Foundation

/// Where the tests find their inputs: committed fixtures, the shared data folder and the model.
public enum Fixtures {
    /// The package root, found from this source file's path (Sources/TestSupport/Fixtures.swift).
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `Tests/Fixtures/<name>`.
    public static func url(_ name: String) -> URL {
        packageRoot.appendingPathComponent("Tests/Fixtures").appendingPathComponent(name)
    }

    /// The shared evaluation data: `$PRUNEKIT_DATA`, else `../shared/data` beside the package.
    public static var dataDirectory: URL {
        if let env = ProcessInfo.processInfo.environment["PRUNEKIT_DATA"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/data")
    }

    public static func data(_ relative: String) -> URL {
        dataDirectory.appendingPathComponent(relative)
    }

    /// The SmolLM2 GGUF that scripts/fetch-model.sh puts in the cache: `$PRUNEKIT_MODEL`, else
    /// `$PRUNEKIT_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf` (default cache ~/.cache/prunekit).
    public static var modelPath: String {
        let env = ProcessInfo.processInfo.environment
        if let m = env["PRUNEKIT_MODEL"], !m.isEmpty { return m }
        let cache = env["PRUNEKIT_CACHE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (NSHomeDirectory() + "/.cache/prunekit")
        return cache + "/SmolLM2-135M-Instruct.Q4_1.gguf"
    }

    /// A fresh empty temporary directory, removed with everything in it when the test process exits.
    public static func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("prunekit-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        created.withLock { dirs in
            if dirs.isEmpty { atexit { Fixtures.created.withLock { $0.forEach { try? FileManager.default.removeItem(at: $0) } } } }
            dirs.append(dir)
        }
        return dir
    }

    private static let created = Locked<[URL]>([])
}

public enum FixtureError: Error, CustomStringConvertible {
    case missing(String)
    public var description: String {
        switch self {
        case .missing(let what): return what
        }
    }
}

extension Fixtures {
    /// The model path, or an error telling how to get it (tests fail rather than skip without it).
    public static func requireModel() throws -> String {
        let path = modelPath
        guard FileManager.default.fileExists(atPath: path) else {
            throw FixtureError.missing("model not found at \(path): run scripts/fetch-model.sh")
        }
        return path
    }
}

/// A value behind a lock.
final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
