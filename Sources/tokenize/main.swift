import ArgumentParser
import Foundation
import TensorIO
import Tokenization
import ToolSupport

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode text with a model's tokenizer (or decode ids).",
        discussion: """
            The tokenizer comes from --model (a GGUF file's tokenizer.ggml.* metadata, a Hugging \
            Face directory's tokenizer.json, or a PruneKit model file's metadata) or from \
            --tokenizer-json. Ids go to standard output, space-separated; --stats prints the \
            throughput on standard error.

            Example:
              tokenize --model SmolLM2-135M-Instruct.Q4_1.gguf wiki.test.raw --count
            """)

    @Option(name: .long, help: "The model whose tokenizer to use.")
    var model: String?

    @Option(name: .long, help: "A Hugging Face tokenizer.json instead of a model.")
    var tokenizerJSON: String?

    @Argument(help: "Text file (zstd-compressed files too), or - for standard input.")
    var input: String = "-"

    @Flag(name: .long, help: "Print only the number of tokens.")
    var count = false

    @Flag(name: .long, help: "Decode: the input holds whitespace-separated ids.")
    var decode = false

    @Flag(name: .long, help: "Add special tokens (BOS) as the tokenizer does by default in transformers.")
    var addSpecial = false

    @Flag(name: .long, help: "Report throughput on standard error.")
    var stats = false

    @Option(name: .customLong("write-json"),
            help: "Write the equivalent Hugging Face tokenizer.json to this path instead of encoding.")
    var writeJSON: String?

    func validate() throws {
        guard (model == nil) != (tokenizerJSON == nil) else {
            throw ValidationError("give exactly one of --model and --tokenizer-json")
        }
    }

    func run() throws {
        try runTool("tokenize", nil) {
            let tokenizer = try tokenizerJSON.map { try Tokenizer.load(json: $0) }
                ?? Tokenizer.load(model: model ?? "")
            if let path = writeJSON {
                try writeText(String(decoding: try tokenizer.tokenizerJSON(), as: UTF8.self), to: path)
                return
            }
            let bytes = try readDataFile(input)
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw TokenizerError("\(input): not UTF-8 text")
            }
            if decode {
                let ids = try text.split(whereSeparator: { $0.isWhitespace }).map { word -> Int32 in
                    guard let id = Int32(word), id >= 0, Int(id) < tokenizer.vocabularySize else {
                        throw TokenizerError("\(input): '\(word)' is not a token id of this vocabulary")
                    }
                    return id
                }
                FileHandle.standardOutput.write(Data(tokenizer.decode(ids).utf8))
                return
            }
            let start = Date()
            let ids = tokenizer.encode(text, addSpecialTokens: addSpecial)
            let seconds = Date().timeIntervalSince(start)
            if count {
                print(ids.count)
            } else {
                FileHandle.standardOutput.write(Data((ids.map(String.init).joined(separator: " ") + "\n").utf8))
            }
            if stats {
                let mb = Double(bytes.count) / 1e6
                printError(String(format: "tokenize: %d tokens, %.2f MB in %.3f s: %.2f MB/s, %.0f tokens/s",
                                  ids.count, mb, seconds, mb / seconds, Double(ids.count) / seconds))
            }
        }
    }
}

Tokenize.main()
