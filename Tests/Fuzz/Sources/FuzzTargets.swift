// Fuzz targets of every reader of untrusted files (docs/DESIGN.md "Hardening"): each takes a byte string and
// must end in a value or a thrown error — never a crash, a hang or an allocation beyond the input's means.
// Built two ways:
// - `scripts/fuzz.sh NAME SECONDS`: with -sanitize=fuzzer,address and -D FUZZING, libFuzzer's main drives
//   `LLVMFuzzerTestOneInput`, the target chosen by PRUNEKIT_FUZZ_TARGET;
// - a normal build: `prunekit-fuzz NAME FILE...` runs a target on files (the corpus replay the tests use).
import Calibration
import Evaluation
import Foundation
import LlamaModel
import Pruning
import TensorIO
import Tokenization
import Training

enum FuzzTarget: String, CaseIterable {
    case safetensors, gguf, tokenizerJSON = "tokenizer-json", tokenizerGGUF = "tokenizer-gguf", config, jsonl, plan,
         statistics, scores

    /// Runs the target on one input; errors are the expected outcome of most inputs.
    func run(_ data: Data, scratch: String) {
        do {
            switch self {
            case .safetensors:
                try data.write(to: URL(fileURLWithPath: scratch))
                let file = try TensorFile(path: scratch)
                for e in file.header.entries { try read(file, e) }
                let stream = try TensorStreamReader(path: scratch)
                while try stream.next() != nil {}
            case .gguf:
                try data.write(to: URL(fileURLWithPath: scratch))
                let file = try GGUFFile(path: scratch)
                for t in file.tensors where t.type.canDequantize && t.elementCount <= 1 << 20 { _ = try file.dequantize(t) }
                _ = try? Model.open(scratch)
            case .tokenizerJSON:
                let tokenizer = try Tokenizer(json: data)
                _ = tokenizer.decode(tokenizer.encode("Hello, world! 123 ça va?\n\tend", addSpecialTokens: true))
            case .tokenizerGGUF:
                try data.write(to: URL(fileURLWithPath: scratch))
                let tokenizer = try Tokenizer(gguf: try GGUFFile(path: scratch).metadata)
                _ = tokenizer.decode(tokenizer.encode("Hello, world! 123 ça va?\n\tend", addSpecialTokens: true))
            case .config:
                guard let text = String(data: data, encoding: .utf8) else { return }
                _ = try? LlamaConfig.fromJSON(text)
                _ = try LlamaConfig.fromHuggingFace(data)
            case .jsonl:
                try data.write(to: URL(fileURLWithPath: scratch))
                _ = try jsonlTexts(scratch)
            case .plan:
                try data.write(to: URL(fileURLWithPath: scratch))
                _ = try PlanFile(path: scratch)
            case .statistics:
                try data.write(to: URL(fileURLWithPath: scratch))
                let stats = try StatisticsFile(path: scratch)
                for e in stats.file.header.entries { try read(stats.file, e) }
            case .scores:
                try data.write(to: URL(fileURLWithPath: scratch))
                _ = try ScoresFile(path: scratch)
            }
        } catch {}
    }

    private func read(_ file: TensorFile, _ e: TensorEntry) throws {
        switch e.dtype {
        case .F64: _ = try file.doubles(e.name)
        case .I64, .I32, .I16, .I8, .U8: _ = try file.integers(e.name)
        default: _ = try file.floats(e.name)
        }
    }
}

#if FUZZING
private let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["PRUNEKIT_FUZZ_TARGET"] ?? ""
    guard let t = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("PRUNEKIT_FUZZ_TARGET must be one of \(FuzzTarget.allCases.map(\.rawValue))\n".utf8))
        exit(64)
    }
    return t
}()
private let scratch = "/dev/shm/prunekit-fuzz-\(getpid())"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    target.run(bytes.map { Data(bytes: $0, count: count) } ?? Data(), scratch: scratch)
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(_ argc: UnsafeMutablePointer<CInt>,
               _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
               _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable's entry point under this name: hand the process to libFuzzer.
@_cdecl("prunekit_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return runDriver(&count, &arguments) { fuzzOne($0, $1) }
}
#else
@main
struct Replay {
    static func main() {
        let args = CommandLine.arguments.dropFirst()
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: prunekit-fuzz TARGET FILE... (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
            exit(64)
        }
        let scratch = NSTemporaryDirectory() + "/prunekit-fuzz-\(getpid())"
        defer { unlink(scratch) }
        for path in args.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else { print("\(path): unreadable"); exit(66) }
            target.run(data, scratch: scratch)
        }
        print("\(target.rawValue): \(args.count - 1) inputs, no crash")
    }
}
#endif
