import Foundation
import TensorIO

/// The evaluation texts, built exactly as the pruning literature's loaders (FLAP, Wanda,
/// LLM-Pruner: Hugging Face `datasets` rows joined) build them, from the files of the data folder.
public enum EvaluationDataset: Sendable, Equatable {
    case wikitext2
    case ptb
    case c4
    case file(String)

    public init(_ name: String) {
        switch name {
        case "wikitext2", "wikitext-2", "wikitext": self = .wikitext2
        case "ptb": self = .ptb
        case "c4": self = .c4
        default: self = .file(name)
        }
    }

    public var name: String {
        switch self {
        case .wikitext2: return "wikitext2"
        case .ptb: return "ptb"
        case .c4: return "c4"
        case .file(let path): return path
        }
    }

    /// The data folder: `$PRUNEKIT_DATA`, else `shared/data` beside the package checkout.
    public static func dataDirectory() -> String {
        if let env = ProcessInfo.processInfo.environment["PRUNEKIT_DATA"], !env.isEmpty {
            return env
        }
        // The executables live in <package>/.build/<config>/; the data beside <package>.
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.deletingLastPathComponent().appendingPathComponent("shared/data")
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        return "../shared/data"
    }

    /// The file the text comes from (for messages: a built-in dataset is named with its file).
    public func file(dataDirectory: String = EvaluationDataset.dataDirectory()) -> String {
        let dir = URL(fileURLWithPath: dataDirectory)
        switch self {
        case .wikitext2: return dir.appendingPathComponent("wikitext-2-raw/wiki.test.raw").path
        case .ptb: return dir.appendingPathComponent("ptb/ptb.test.txt").path
        case .c4: return dir.appendingPathComponent("c4/c4-validation-sample-2k.jsonl.zst").path
        case .file(let path): return path
        }
    }

    /// "NAME (FILE)" for a built-in dataset, the path for a file: how messages name the data.
    public func described(dataDirectory: String = EvaluationDataset.dataDirectory()) -> String {
        if case .file(let path) = self { return path }
        return "\(name) (\(file(dataDirectory: dataDirectory)))"
    }

    /// The text to tokenise:
    /// - wikitext2: the rows of `wikitext-2-raw-v1` test joined by "\n\n"; a row is a line of
    ///   wiki.test.raw with its "\n", and a whitespace-only line is the empty row "".
    /// - ptb: the lines of ptb.test.txt, each stripped of surrounding whitespace, joined by " ".
    /// - c4: the `text` fields of c4-validation-sample-2k.jsonl.zst (2,000 documents) joined by
    ///   "\n\n".
    /// - a path: the file's text as it is (zstd-compressed files are decompressed).
    public func text(dataDirectory: String = EvaluationDataset.dataDirectory()) throws -> String {
        let path = file(dataDirectory: dataDirectory)
        switch self {
        case .wikitext2:
            let raw = try readText(path)
            let rows = splitKeepingNewlines(raw).map {
                $0.allSatisfy { $0.isWhitespace } ? "" : $0
            }
            return rows.joined(separator: "\n\n")
        case .ptb:
            let raw = try readText(path)
            let lines = raw.split(separator: "\n", omittingEmptySubsequences: false)
            // A final newline ends the last line; it does not start another row.
            let rows = raw.hasSuffix("\n") ? lines.dropLast() : lines[...]
            return rows.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
                .joined(separator: " ")
        case .c4:
            return try jsonlTexts(path).joined(separator: "\n\n")
        case .file:
            return try readText(path)
        }
    }
}

public struct DatasetError: DiagnosedError {
    public var kind: FailureKind
    public var message: String
    public init(_ kind: FailureKind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public var description: String { message }
}

func readText(_ path: String) throws -> String {
    let data = try readDataFile(path)
    guard let text = String(validating: data, as: UTF8.self) else {
        throw DatasetError(.badData, "\(path): not UTF-8 text")
    }
    return text
}

/// Lines with their "\n" (the last one without, if the text does not end in a newline).
func splitKeepingNewlines(_ text: String) -> [String] {
    var out: [String] = []
    var current = Substring(text).utf8[...]
    while let i = current.firstIndex(of: UInt8(ascii: "\n")) {
        let next = current.index(after: i)
        out.append(String(Substring(current[current.startIndex..<next])))
        current = current[next...]
    }
    if !current.isEmpty { out.append(String(Substring(current))) }
    return out
}

/// The `text` field of every line of a JSONL file (optionally zstd), in order.
public func jsonlTexts(_ path: String) throws -> [String] {
    try jsonlTexts(contents: readDataFile(path), name: shownName(path))
}

/// The `text` field of every line of JSONL contents already read (decompressed) from `name`.
public func jsonlTexts(contents data: [UInt8], name path: String) throws -> [String] {
    var texts: [String] = []
    var lineNumber = 0
    for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
        lineNumber += 1
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
        guard String(validating: line, as: UTF8.self) != nil else {
            throw DatasetError(.badData, "\(path):\(lineNumber): the line is not valid UTF-8")
        }
        let text: String?
        do {
            text = try line.withUnsafeBytes { try JSONLine.stringField($0, "text") }
        } catch {
            throw DatasetError(.badData, "\(path):\(lineNumber): \(error)")
        }
        guard let text else {
            throw DatasetError(.badData, "\(path):\(lineNumber): no string field 'text'")
        }
        texts.append(text)
    }
    return texts
}
