import Foundation
import LlamaModel
import TensorIO
import Tokenization

// The seven commonsense tasks of the pruning papers, scored as lm-evaluation-harness 0.4 scores
// them (loglikelihood multiple choice; its task YAMLs and `api/task.py`, `models/huggingface.py`):
//   boolq       "{passage}\nQuestion: {question}?\nAnswer:"  choices "no", "yes"            acc
//   piqa        "Question: {goal}\nAnswer:"                  choices sol1, sol2            acc, acc_norm
//   hellaswag   the query (activity_label: ctx)              the four endings              acc, acc_norm
//   winogrande  sentence up to "_" with each option          the rest after "_" (shared)   acc
//   arc_easy, arc_challenge "Question: {stem}\nAnswer:"      the choice texts              acc, acc_norm
//   openbookqa  the question stem                            the choice texts              acc, acc_norm
// Each request is (context, " " + continuation); acc = argmax of the summed log-likelihood,
// acc_norm = argmax of log-likelihood / (characters of the choice), the stderr of a mean
// √(p(1−p)/(n−1)). The data files and their formats: shared/data/SOURCES.md §4. HellaSwag's file
// holds `activity_label + ": " + ctx` with ctx_b as written (lm-eval capitalises ctx_b's first
// letter): we use the line as it is, after lm-eval's `preprocess`.

public enum ZeroShotTask: String, CaseIterable, Sendable {
    case boolq, piqa, hellaswag, winogrande
    case arcEasy = "arc_easy"
    case arcChallenge = "arc_challenge"
    case openbookqa

    /// Whether lm-eval reports acc_norm for the task (and the papers' tables take it).
    public var reportsNormalised: Bool { ![.boolq, .winogrande].contains(self) }

    /// The tasks a `--tasks` list names ("all", or names separated by commas).
    public static func list(_ text: String) throws -> [ZeroShotTask] {
        if text == "all" { return allCases }
        return try text.split(separator: ",").map { name in
            guard let task = ZeroShotTask(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw DatasetError(.usage, "unknown task '\(name)' (known: \(allCases.map(\.rawValue).joined(separator: ", ")), or all)")
            }
            return task
        }
    }
}

/// One question: its requests' contexts and continuations (either one context and a continuation
/// per choice, or — WinoGrande — a context per choice and one continuation), the choice texts
/// acc_norm divides by, and the index of the right one.
public struct ZeroShotItem: Sendable, Equatable {
    public var contexts: [String]
    public var continuations: [String]
    public var choices: [String]
    public var gold: Int

    /// (context, continuation) per choice, the continuation with lm-eval's target delimiter " ".
    public var requests: [(context: String, continuation: String)] {
        contexts.count == 1
            ? continuations.map { (contexts[0], " " + $0) }
            : contexts.map { ($0, " " + continuations[0]) }
    }
}

/// A task's items from the data folder (`tasks/…`), the first `limit` in file order.
public func zeroShotItems(_ task: ZeroShotTask, dataDirectory: String = EvaluationDataset.dataDirectory(),
                          limit: Int? = nil) throws -> [ZeroShotItem] {
    let dir = dataDirectory + "/tasks/"
    let items: [ZeroShotItem]
    switch task {
    case .boolq:
        items = try jsonLines(dir + "boolq/val.jsonl.zst", limit: limit).map { line in
            ZeroShotItem(contexts: ["\(try line.string("passage"))\nQuestion: \(try line.string("question"))?\nAnswer:"],
                         continuations: ["no", "yes"], choices: ["no", "yes"], gold: try line.bool("label") ? 1 : 0)
        }
    case .piqa:
        let labels = try labelLines(dir + "piqa/valid-labels.lst", allowed: ["0", "1"])
        items = try jsonLines(dir + "piqa/valid.jsonl", limit: limit).map { line in
            let choices = [try line.string("sol1"), try line.string("sol2")]
            return ZeroShotItem(contexts: ["Question: \(try line.string("goal"))\nAnswer:"], continuations: choices,
                                choices: choices, gold: try line.label(from: labels, offset: 0))
        }
    case .winogrande:
        let labels = try labelLines(dir + "winogrande/dev-labels.lst", allowed: ["1", "2"])
        items = try jsonLines(dir + "winogrande/dev.jsonl", limit: limit).map { line in
            let sentence = try line.string("sentence")
            guard let blank = sentence.firstIndex(of: "_") else { throw line.problem("the sentence has no '_'") }
            let options = [try line.string("option1"), try line.string("option2")]
            let rest = sentence[sentence.index(after: blank)...].trimmingCharacters(in: .whitespaces)
            return ZeroShotItem(contexts: options.map { String(sentence[..<blank]) + $0 }, continuations: [rest],
                                choices: options, gold: try line.label(from: labels, offset: 1))
        }
    case .arcEasy, .arcChallenge, .openbookqa:
        let path = task == .openbookqa ? "openbookqa/test.jsonl"
            : task == .arcEasy ? "arc_easy/ARC-Easy-Test.jsonl" : "arc_challenge/ARC-Challenge-Test.jsonl"
        items = try jsonLines(dir + path, limit: limit).map { line in
            let stem = try line.string("question", "stem")
            let choices = try line.array("question", "choices")
            let texts = try choices.map { try line.string(in: $0, "text") }
            let labels = try choices.map { try line.string(in: $0, "label") }
            let key = try line.string("answerKey").trimmingCharacters(in: .whitespaces)
            guard let gold = labels.firstIndex(of: key) else {
                throw line.problem("answerKey '\(key)' is not one of the choice labels \(labels)")
            }
            return ZeroShotItem(contexts: [task == .openbookqa ? stem : "Question: \(stem)\nAnswer:"],
                                continuations: texts, choices: texts, gold: gold)
        }
    case .hellaswag:
        items = try hellaswagItems(dir + "hellaswag/hellaswag_val_full.txt.zst", limit: limit)
    }
    guard !items.isEmpty else { throw DatasetError(.badData, "\(dir)\(task.rawValue): no items") }
    return items
}

/// lm-eval's hellaswag `preprocess`: strip, " [title]" → ". ", bracketed tags removed, double
/// spaces made single.
func hellaswagPreprocess(_ text: String) -> String {
    var t = text.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: " [title]", with: ". ")
    while let open = t.range(of: "["), let close = t.range(of: "]", range: open.upperBound..<t.endIndex) {
        t.removeSubrange(open.lowerBound..<close.upperBound)
    }
    return t.replacingOccurrences(of: "  ", with: " ")
}

/// The 6-line format: the query, the gold label 0–3, four endings.
func hellaswagItems(_ path: String, limit: Int?) throws -> [ZeroShotItem] {
    let text = try readText(path)
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if lines.last == "" { lines.removeLast() }
    guard !lines.isEmpty else { throw DatasetError(.badData, "\(path): no items (an empty file)") }
    guard lines.count % 6 == 0 else {
        throw DatasetError(.badData, "\(path):\(lines.count): \(lines.count) lines, not 6 per item (truncated?)")
    }
    let count = min(lines.count / 6, limit ?? Int.max)
    return try (0..<count).map { i in
        let base = 6 * i
        guard let gold = Int(lines[base + 1]), (0...3).contains(gold) else {
            throw DatasetError(.badData, "\(path):\(base + 2): label '\(lines[base + 1])' is not 0, 1, 2 or 3")
        }
        let endings = lines[(base + 2)..<(base + 6)].map(hellaswagPreprocess)
        return ZeroShotItem(contexts: [hellaswagPreprocess(lines[base])], continuations: endings, choices: endings, gold: gold)
    }
}

/// One JSON line of a task file, with the file and line for its errors.
struct TaskLine {
    let value: JSONValue
    let path: String
    let number: Int

    func problem(_ what: String) -> DatasetError { DatasetError(.badData, "\(path):\(number): \(what)") }

    func field(_ keys: [String]) throws -> JSONValue {
        var v = value
        for key in keys {
            guard let next = v[key] else { throw problem("missing field '\(keys.joined(separator: "."))'") }
            v = next
        }
        return v
    }

    func string(_ keys: String...) throws -> String {
        guard let s = try field(keys).string else { throw problem("field '\(keys.joined(separator: "."))' is not a string") }
        return s
    }

    func string(in object: JSONValue, _ key: String) throws -> String {
        guard let s = object[key]?.string else { throw problem("a choice lacks the string '\(key)'") }
        return s
    }

    /// true/false, or the strings "true"/"false" (the SuperGLUE BoolQ file writes them so).
    func bool(_ key: String) throws -> Bool {
        let v = try field([key])
        if let b = v.bool { return b }
        switch v.string {
        case "true"?: return true
        case "false"?: return false
        default: throw problem("field '\(key)' is not true or false")
        }
    }

    func array(_ keys: String...) throws -> [JSONValue] {
        guard let a = try field(keys).items, !a.isEmpty else { throw problem("field '\(keys.joined(separator: "."))' is not a non-empty list") }
        return a
    }

    /// The gold index from a labels file (one label per line, the first label meaning `offset`).
    func label(from labels: (path: String, values: [String]), offset: Int) throws -> Int {
        guard number <= labels.values.count, let n = Int(labels.values[number - 1]) else {
            throw DatasetError(.badData, "\(labels.path):\(number): no label for \(path) line \(number)")
        }
        return n - offset
    }
}

func jsonLines(_ path: String, limit: Int?) throws -> [TaskLine] {
    let data = try readDataFile(path)
    var out: [TaskLine] = []
    for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
        if out.count == limit ?? Int.max { break }
        if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
        do {
            let value = try JSONValue.parse(Array(line))
            guard value.members != nil else { throw DatasetError(.badData, "not a JSON object") }
            out.append(TaskLine(value: value, path: path, number: i + 1))
        } catch {
            throw DatasetError(.badData, "\(path):\(i + 1): \(error)")
        }
    }
    if out.isEmpty && limit != 0 { throw DatasetError(.badData, "\(path): no JSON lines (an empty file)") }
    return out
}

/// A labels file: one label per line, each one of `allowed`.
func labelLines(_ path: String, allowed: Set<String>) throws -> (path: String, values: [String]) {
    let text = try readText(path)
    let values = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    let lines = values.last == "" ? Array(values.dropLast()) : values
    for (i, v) in lines.enumerated() where !allowed.contains(v) {
        throw DatasetError(.badData, "\(path):\(i + 1): label '\(v)' is not one of \(allowed.sorted().joined(separator: ", "))")
    }
    return (path, lines)
}

// MARK: Scoring

/// lm-eval's `_encode_pair`: trailing spaces of the context move to the continuation; the
/// continuation's tokens are those of the whole text after the context's.
public func encodePair(context: String, continuation: String, tokenizer: Tokenizer, addSpecialTokens: Bool)
    -> (context: [Int32], continuation: [Int32])
{
    var context = context, continuation = continuation
    let kept = context.unicodeScalars.reversed().drop { $0.properties.isWhitespace }.count
    let spaces = context.unicodeScalars.count - kept
    if spaces > 0 {
        let scalars = Array(context.unicodeScalars)
        continuation = String(String.UnicodeScalarView(scalars[kept...])) + continuation
        context = String(String.UnicodeScalarView(scalars[..<kept]))
    }
    let whole = tokenizer.encode(context + continuation, addSpecialTokens: addSpecialTokens)
    let head = tokenizer.encode(context, addSpecialTokens: addSpecialTokens)
    return (head, Array(whole[head.count...]))
}

/// A task's scores: per item the log-likelihood and greedy flag of each choice.
public struct ZeroShotScores: Sendable {
    public var task: ZeroShotTask
    public var items: [ZeroShotItem]
    public var choices: [[ContinuationScore]]

    public var n: Int { items.count }
    /// Per item: the argmax of the log-likelihoods (first among equals) is the gold one.
    public var correct: [Bool] { zip(items, choices).map { argmax($1.map(\.logLikelihood)) == $0.gold } }
    /// The same with each log-likelihood divided by its choice's length in characters (Unicode
    /// code points, as Python's `len`).
    public var correctNormalised: [Bool] {
        zip(items, choices).map { item, c in
            argmax(zip(c, item.choices).map { $0.logLikelihood / Double($1.unicodeScalars.count) }) == item.gold
        }
    }

    func argmax(_ x: [Double]) -> Int { x.indices.max { x[$0] < x[$1] || (x[$0] == x[$1] && $0 > $1) } ?? 0 }
}

/// acc (and acc_norm where lm-eval reports it) of a task, with their standard errors.
public struct ZeroShotResult: Codable, Sendable {
    public var acc: Double
    public var accStderr: Double
    public var accNorm: Double?
    public var accNormStderr: Double?
    public var n: Int

    enum CodingKeys: String, CodingKey {
        case acc, n
        case accStderr = "acc_stderr", accNorm = "acc_norm", accNormStderr = "acc_norm_stderr"
    }

    public init(_ s: ZeroShotScores) {
        func mean(_ x: [Bool]) -> Double { Double(x.filter { $0 }.count) / Double(max(x.count, 1)) }
        func stderr(_ p: Double) -> Double { s.n > 1 ? (p * (1 - p) / Double(s.n - 1)).squareRoot() : 0 }
        n = s.n
        acc = mean(s.correct)
        accStderr = stderr(acc)
        if s.task.reportsNormalised {
            let p = mean(s.correctNormalised)
            accNorm = p
            accNormStderr = stderr(p)
        }
    }

    /// The figure the papers' tables average: acc_norm where reported, else acc.
    public var headline: Double { accNorm ?? acc }
}

/// Scores a task's items with `runner`: every item's requests encoded as lm-eval does, the
/// choices that share a context scored in one packed pass.
public func scoreZeroShot(_ task: ZeroShotTask, items: [ZeroShotItem], runner: Runner, tokenizer: Tokenizer,
                          progress: ((Int, Int) -> Void)? = nil) throws -> ZeroShotScores {
    // Per item, its requests grouped by context tokens (one group for all but WinoGrande).
    var requests: [ContinuationRequest] = []
    var slots: [[(request: Int, continuation: Int)]] = []
    for item in items {
        var mine: [(Int, Int)] = []
        var byContext: [[Int32]: Int] = [:]
        for (context, continuation) in item.requests {
            let (c, t) = encodePair(context: context, continuation: continuation, tokenizer: tokenizer, addSpecialTokens: true)
            guard !t.isEmpty else { throw DatasetError(.badData, "\(task.rawValue): a continuation encodes to no tokens") }
            if let r = byContext[c] {
                requests[r].continuations.append(t)
                mine.append((r, requests[r].continuations.count - 1))
            } else {
                byContext[c] = requests.count
                requests.append(ContinuationRequest(context: c, continuations: [t]))
                mine.append((requests.count - 1, 0))
            }
        }
        slots.append(mine)
    }
    let scores = try runner.score(requests, progress: progress)
    return ZeroShotScores(task: task, items: items, choices: slots.map { $0.map { scores[$0.request][$0.continuation] } })
}

/// The results of the tasks asked: a table for standard error and the `--json` object.
public struct ZeroShotReport: Sendable {
    public var results: [(task: ZeroShotTask, result: ZeroShotResult)]

    public init(results: [(task: ZeroShotTask, result: ZeroShotResult)]) { self.results = results }

    /// Mean over the tasks of acc_norm where the task reports it, else acc.
    public var average: Double {
        results.map(\.result.headline).reduce(0, +) / Double(max(results.count, 1))
    }

    public var table: [String] {
        func row(_ task: String, _ metric: String, _ value: String, _ stderr: String, _ n: String) -> String {
            task.padding(toLength: 14, withPad: " ", startingAt: 0) + metric.padding(toLength: 9, withPad: " ", startingAt: 0)
                + String(repeating: " ", count: max(0, 8 - value.count)) + value
                + String(repeating: " ", count: max(0, 10 - stderr.count)) + stderr
                + String(repeating: " ", count: max(0, 7 - n.count)) + n
        }
        var lines = [row("task", "metric", "value", "± stderr", "items")]
        for (task, r) in results {
            lines.append(row(task.rawValue, "acc", String(format: "%.4f", r.acc), String(format: "%.4f", r.accStderr), "\(r.n)"))
            if let norm = r.accNorm, let se = r.accNormStderr {
                lines.append(row("", "acc_norm", String(format: "%.4f", norm), String(format: "%.4f", se), "\(r.n)"))
            }
        }
        lines.append(String(format: "average (acc_norm where reported, else acc) over %d tasks: %.4f", results.count, average))
        return lines
    }

    /// `{"tasks": {"piqa": {"acc": …, "acc_stderr": …, "acc_norm": …, "acc_norm_stderr": …, "n": …}, …},
    /// "average": {"acc": …}}` (keys sorted).
    public func json() throws -> String {
        struct Average: Encodable { var acc: Double }
        struct Body: Encodable { var tasks: [String: ZeroShotResult]; var average: Average }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = Body(tasks: Dictionary(uniqueKeysWithValues: results.map { ($0.task.rawValue, $0.result) }),
                        average: Average(acc: average))
        return String(decoding: try encoder.encode(body), as: UTF8.self)
    }
}

/// `evaluate --tasks`: the first `limit` items of each task (all read and checked before any is
/// scored) scored on `model` with its tokenizer. `progress(task, done, total)` counts requests.
public func evaluateZeroShot(model: Model, tasks: [ZeroShotTask], limit: Int?,
                             dataDirectory: String = EvaluationDataset.dataDirectory(),
                             progress: ((ZeroShotTask, Int, Int) -> Void)? = nil) throws -> ZeroShotReport {
    let tokenizer = try model.tokenizer()
    let items = try tasks.map { try zeroShotItems($0, dataDirectory: dataDirectory, limit: limit) }
    let runner = Runner(model: model, maxPositions: model.config.maxPositionEmbeddings)
    var results: [(task: ZeroShotTask, result: ZeroShotResult)] = []
    for (task, taskItems) in zip(tasks, items) {
        let scores = try scoreZeroShot(task, items: taskItems, runner: runner, tokenizer: tokenizer) { progress?(task, $0, $1) }
        results.append((task, ZeroShotResult(scores)))
    }
    return ZeroShotReport(results: results)
}
