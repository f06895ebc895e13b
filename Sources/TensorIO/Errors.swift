// Errors that name what is wrong and where. Every module's error type conforms to
// `DiagnosedError`, so that the tools can map any failure to one stderr line and an exit code
// (64 usage, 65 bad data, 66 missing input, 74 I/O; sysexits.h).

public enum FailureKind: Sendable {
    case usage
    case badData
    case missingInput
    case io

    public var exitCode: Int32 {
        switch self {
        case .usage: return 64
        case .badData: return 65
        case .missingInput: return 66
        case .io: return 74
        }
    }
}

public protocol DiagnosedError: Error, CustomStringConvertible {
    var kind: FailureKind { get }
}

/// An error that is one line about bad data; an artifact's own error type is then just its message:
/// `struct PlanFileError: BadDataError { var message: String; init(_ message: String) { … } }`.
public protocol BadDataError: DiagnosedError {
    var message: String { get }
}

extension BadDataError {
    public var kind: FailureKind { .badData }
    public var description: String { message }
}

/// A failure while reading or writing a tensor file, a GGUF file or a model directory.
public struct TensorIOError: DiagnosedError {
    public var kind: FailureKind
    public var message: String

    public init(_ kind: FailureKind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public static func badData(_ message: String) -> TensorIOError { .init(.badData, message) }
    public static func io(_ message: String) -> TensorIOError { .init(.io, message) }
    public static func missing(_ message: String) -> TensorIOError { .init(.missingInput, message) }

    public var description: String { message }
}

/// The one-line reason a file is not of the expected kind — "PATH: not a NOUN file (metadata format
/// is 'x')" — or nil when its metadata `format` is `expected`. Each artifact reader wraps it in
/// its own error type.
public func formatMismatch(_ metadata: [String: String], expected: String, path: String, noun: String) -> String? {
    guard metadata["format"] != expected else { return nil }
    return "\(path): not a \(noun) file (metadata format is \(metadata["format"].map { "'\($0)'" } ?? "missing"))"
}
