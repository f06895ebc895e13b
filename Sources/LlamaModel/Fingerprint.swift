import Foundation
import TensorIO

/// A model's identity, so that a stage can refuse statistics, scores or plans made for another
/// model. For an imported model (GGUF, Hugging Face directory) it is the sha256 of
///   "prunekit-fingerprint-v1\n" ‖ config JSON ‖ for each tensor in canonical order:
///   "\n" ‖ name ‖ " " ‖ shape ("576x49152") ‖ "\n" ‖ its values as float32 little-endian,
/// i.e. of what the model computes with, whatever format it came in. A model file carries its
/// source's fingerprint in `__metadata__["fingerprint"]`, so converting never changes it;
/// models derived by a stage (slice, restore, finetune) carry `Fingerprint.derived`.
public enum Fingerprint {
    /// Tensors beyond `largeTensor` elements are fed a sixteenth of that at a time.
    static func compute(model: Model, largeTensor: Int = 1 << 26) throws -> String {
        var hash = SHA256()
        func feed(_ text: String) {
            var t = text
            t.withUTF8 { hash.update(UnsafeRawBufferPointer($0)) }
        }
        feed("prunekit-fingerprint-v1\n")
        feed(try model.config.jsonString())
        for name in model.tensorNames {
            let shape = model.shape(name) ?? []
            feed("\n\(name) \(shape.map(String.init).joined(separator: "x"))\n")
            // A large tensor (a 128k vocabulary's embedding and head: 2 GB each as F32) is fed a
            // block of rows at a time: the same bytes, in order.
            try model.forEachPart(name, largeTensor: largeTensor) { values, _ in values.withUnsafeBytes { hash.update($0) } }
        }
        return SHA256.hex(hash.finalize())
    }

    /// The fingerprint of a model a stage derived from `parent` with the given inputs
    /// (the fingerprints or digests of plan, statistics, arguments).
    public static func derived(from parent: String, stage: String, inputs: [String]) -> String {
        var hash = SHA256()
        var text = "prunekit-derived-v1\n\(parent)\n\(stage)\n" + inputs.joined(separator: "\n")
        text.withUTF8 { hash.update(UnsafeRawBufferPointer($0)) }
        return SHA256.hex(hash.finalize())
    }
}
