import ArgumentParser
import Foundation
import TensorIO
import Tokenization

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
        do {
            let tokenizer = try loadTokenizer()
            if let path = writeJSON {
                do { try tokenizer.tokenizerJSON().write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
                    throw TensorIOError.io("\(path): \(error.localizedDescription)")
                }
                return
            }
            let bytes = try readDataFile(input)
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw TokenizerError("\(input): not UTF-8 text")
            }
            if decode {
                var ids: [Int32] = []
                for word in text.split(whereSeparator: { $0.isWhitespace }) {
                    guard let id = Int32(word), id >= 0, Int(id) < tokenizer.vocabularySize else {
                        throw TokenizerError("\(input): '\(word)' is not a token id of this vocabulary")
                    }
                    ids.append(id)
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
                FileHandle.standardError.write(Data(String(
                    format: "tokenize: %d tokens, %.2f MB in %.3f s: %.2f MB/s, %.0f tokens/s\n",
                    ids.count, mb, seconds, mb / seconds, Double(ids.count) / seconds).utf8))
            }
        } catch let e as DiagnosedError {
            FileHandle.standardError.write(Data("tokenize: \(e.description)\n".utf8))
            throw ExitCode(e.kind.exitCode)
        }
    }

    func loadTokenizer() throws -> Tokenizer {
        if let path = tokenizerJSON {
            return try Tokenizer(json: Data(try readDataFile(path)))
        }
        let path = model ?? ""
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TensorIOError.missing("\(path): no such file or directory")
        }
        if isDirectory.boolValue {
            return try Tokenizer(json: Data(try readDataFile(path + "/tokenizer.json")))
        }
        let head = FileHandle(forReadingAtPath: path).flatMap { try? $0.read(upToCount: 4) }
        if head == Data("GGUF".utf8) {
            return try Tokenizer(gguf: try GGUFFile(path: path).metadata)
        }
        let file = try TensorFile(path: path)
        guard let json = file.metadata["tokenizer"] else {
            throw TokenizerError("\(path): the model file carries no tokenizer")
        }
        return try Tokenizer(json: Data(json.utf8))
    }
}

Tokenize.main()
