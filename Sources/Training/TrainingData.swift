import Foundation
import TensorIO
import Tokenization

/// One training sequence: its tokens and, per position t, the token t must predict (−1: no loss
/// there — an instruction's prompt, or nothing follows).
public struct TrainingExample: Sendable, Equatable {
    public var tokens: [Int32]
    public var targets: [Int32]

    public init(tokens: [Int32], targets: [Int32]) {
        precondition(tokens.count == targets.count)
        self.tokens = tokens
        self.targets = targets
    }

    /// Every position predicts the next token of the same sequence (the last predicts nothing).
    public init(window: [Int32]) {
        tokens = window
        targets = Array(window.dropFirst()) + [-1]
    }

    /// Positions that count in the loss.
    public var counted: Int { targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }
}

/// Where training examples come from, and how they were made (for a run's fingerprint).
public struct TrainingData: Sendable {
    public var examples: [TrainingExample]
    /// "text windows", "documents" or "instructions".
    public var kind: String
    /// sha256 of the data file as read (decompressed).
    public var dataSHA256: String

    /// The Alpaca prompt (Taori et al. 2023; LLM-Pruner's `Prompter('alpaca')`): with and without
    /// an input.
    static func alpacaPrompt(instruction: String, input: String?) -> String {
        if let input, !input.isEmpty {
            return "Below is an instruction that describes a task, paired with an input that provides further context. "
                + "Write a response that appropriately completes the request.\n\n### Instruction:\n\(instruction)"
                + "\n\n### Input:\n\(input)\n\n### Response:\n"
        }
        return "Below is an instruction that describes a task. Write a response that appropriately completes the request."
            + "\n\n### Instruction:\n\(instruction)\n\n### Response:\n"
    }

    /// Plain text (`.zst` read directly): the whole text tokenised, cut into consecutive windows
    /// of `length` tokens (a last, shorter piece is dropped), each predicting its next tokens.
    public static func text(_ path: String, tokenizer: Tokenizer, length: Int) throws -> TrainingData {
        let shown = shownName(path)
        let bytes = try readDataFile(path)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw TrainingError("\(shown): the text is not valid UTF-8")
        }
        let ids = tokenizer.encode(text, addSpecialTokens: true)
        return TrainingData(examples: windows(ids, length: length), kind: "text windows",
                            dataSHA256: bytes.withUnsafeBytes { SHA256.hexDigest($0) })
    }

    /// A JSONL file (`.zst` read directly), every line an object of one of two kinds:
    /// - `text` (C4 style): each document tokenised as `tokenizer(text)`, the documents
    ///   concatenated and cut into consecutive windows of `length` tokens (transformers'
    ///   `run_clm` `group_texts`);
    /// - `instruction`, optional `input`, `output` (Alpaca): the prompt above followed by the
    ///   output and EOS, truncated to `length` tokens (EOS only if it fits, as LLM-Pruner's
    ///   `post_training.py`), with the loss on the response only: the targets of the prompt's
    ///   tokens, as tokenised alone, are −1.
    public static func jsonl(_ path: String, tokenizer: Tokenizer, length: Int) throws -> TrainingData {
        let shown = shownName(path)
        let bytes = try readDataFile(path)
        let sha = bytes.withUnsafeBytes { SHA256.hexDigest($0) }
        var documents: [[Int32]] = [], examples: [TrainingExample] = []
        var lineNumber = 0
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            let value: JSONValue
            do { value = try JSONValue.parse(Array(line)) } catch {
                throw TrainingError("\(shown):\(lineNumber): \(error)")
            }
            guard value.members != nil else { throw TrainingError("\(shown):\(lineNumber): not a JSON object") }
            if let instruction = value["instruction"] {
                guard let instruction = instruction.string else {
                    throw TrainingError("\(shown):\(lineNumber): 'instruction' is not a string")
                }
                guard let output = value["output"]?.string else {
                    throw TrainingError("\(shown):\(lineNumber): an instruction record needs a string field 'output'")
                }
                let input = value["input"]?.string
                if value["input"] != nil && input == nil && !(value["input"]!.isNull) {
                    throw TrainingError("\(shown):\(lineNumber): 'input' is not a string")
                }
                guard documents.isEmpty else {
                    throw TrainingError("\(shown):\(lineNumber): an instruction record in a file of 'text' records")
                }
                let prompt = alpacaPrompt(instruction: instruction, input: input)
                examples.append(instructionExample(prompt: prompt, output: output, tokenizer: tokenizer,
                                                   length: length))
            } else if let text = value["text"] {
                guard let text = text.string else { throw TrainingError("\(shown):\(lineNumber): 'text' is not a string") }
                guard examples.isEmpty else {
                    throw TrainingError("\(shown):\(lineNumber): a 'text' record in a file of instruction records")
                }
                documents.append(tokenizer.encode(text, addSpecialTokens: true))
            } else {
                throw TrainingError("\(shown):\(lineNumber): neither a 'text' nor an 'instruction' record")
            }
        }
        if !documents.isEmpty {
            return TrainingData(examples: windows(documents.flatMap { $0 }, length: length), kind: "documents",
                                dataSHA256: sha)
        }
        return TrainingData(examples: examples, kind: "instructions", dataSHA256: sha)
    }

    /// Exact windows: a tensor file with an integer tensor `tokens` [N, T], each window
    /// predicting its next tokens.
    public static func tokens(_ path: String, vocabularySize V: Int) throws -> TrainingData {
        let file = try TensorFile(path: path)
        guard let entry = file.header.entries.first(where: { $0.name == "tokens" }), entry.shape.count == 2 else {
            throw TrainingError("\(file.name): no integer tensor 'tokens' [N, T]")
        }
        let ids = try file.integers("tokens")
        let n = entry.shape[0], t = entry.shape[1]
        if let bad = ids.first(where: { $0 < 0 || $0 >= V }) {
            throw TrainingError("\(file.name): token id \(bad) is outside the vocabulary (\(V))")
        }
        let examples = (0..<n).map { i in TrainingExample(window: ids[(i * t)..<((i + 1) * t)].map { Int32($0) }) }
        let sha = try file.withBytes("tokens") { SHA256.hexDigest($0) }
        return TrainingData(examples: examples, kind: "token windows", dataSHA256: sha)
    }

    static func windows(_ ids: [Int32], length: Int) -> [TrainingExample] {
        stride(from: 0, to: ids.count - length + 1, by: length).map {
            TrainingExample(window: Array(ids[$0..<($0 + length)]))
        }
    }

    static func instructionExample(prompt: String, output: String, tokenizer: Tokenizer, length: Int)
        -> TrainingExample {
        var full = Array(tokenizer.encode(prompt + output, addSpecialTokens: true).prefix(length))
        if let eos = tokenizer.eosTokenID, full.last != eos && full.count < length { full.append(eos) }
        let promptLength = min(tokenizer.encode(prompt, addSpecialTokens: true).count, full.count)
        // Position t predicts token t+1: it counts when token t+1 belongs to the response.
        var targets = [Int32](repeating: -1, count: full.count)
        for t in 0..<(full.count - 1) where t + 1 >= promptLength { targets[t] = full[t + 1] }
        return TrainingExample(tokens: full, targets: targets)
    }
}

public struct TrainingError: DiagnosedError {
    public var message: String
    public var kind: FailureKind
    public init(_ message: String, kind: FailureKind = .badData) {
        self.message = message
        self.kind = kind
    }
    public var description: String { message }
}
