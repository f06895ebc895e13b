import ArgumentParser
import Calibration

/// Where calibrate's windows come from: documents, one text, or exact windows.
struct WindowOptions: ParsableArguments {
    @Option(name: .long, help: "Calibration documents: JSONL with a 'text' field per line (.zst read directly).")
    var jsonl: String?

    @Option(name: .long, help: "Calibration text: one stream (.zst read directly).")
    var text: String?

    @Option(name: .long, help: "Exact windows: a tensor file with an integer tensor 'tokens' [N, T].")
    var tokens: String?

    @Option(name: .long, help: "Windows to draw (default 128).")
    var samples: Int?

    @Option(name: .long, help: "Window length T in tokens (default 2048).")
    var seqlen: Int?

    @Option(name: .long, help: "Seed of the window drawing (Python's random.seed; default 0).")
    var seed: UInt64?

    func validate() throws {
        guard [jsonl, text, tokens].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --jsonl, --text and --tokens")
        }
        if tokens != nil && (samples != nil || seqlen != nil || seed != nil) {
            throw ValidationError("--samples, --seqlen and --seed do not apply to --tokens (its windows are used as they are)")
        }
        if (samples ?? 1) < 1 || (seqlen ?? 1) < 1 { throw ValidationError("--samples and --seqlen must be at least 1") }
    }

    /// A request for these windows (defaults: 128 windows of 2048 tokens, seed 0).
    func request() -> CalibrationRequest {
        var request = CalibrationRequest(source: jsonl.map { .jsonl($0) } ?? text.map { .text($0) } ?? .tokens(tokens!))
        request.samples = samples ?? 128
        request.length = seqlen ?? 2048
        request.seed = seed ?? 0
        return request
    }
}
