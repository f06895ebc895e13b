import Foundation
import LlamaModel
import TensorIO

/// A LoRA run's state between steps, in one tensor file written atomically: the adapters, the
/// optimizer's moments (tensors `adapters`, `adam.m`, `adam.v`, F32 [count]) and, in the
/// metadata, the step, the history of losses, and what the run is (model fingerprint, data
/// digest, every option) — so that a resume continues exactly the run that wrote it and refuses
/// any other. The data position and dropout masks follow from the seed and the step.
public struct FinetuneCheckpoint {
    public static let format = "prunekit-lora-checkpoint-v1"

    /// Everything that must agree for a resume: option fields, the model and the data.
    public static func run(options: FinetuneOptions, modelFingerprint: String, data: TrainingData,
                           trainExamples: Int) -> [String: String] {
        var run = options.record
        run["model"] = modelFingerprint
        run["data"] = data.dataSHA256
        run["data_kind"] = data.kind
        run["examples"] = "\(trainExamples)"
        return run
    }

    public static func write(path: String, trainer: LoRATrainer, run: [String: String],
                             evaluations: [(step: Int, loss: Double)]) throws {
        let n = trainer.adapters.count
        var meta = ["format": format, "step": "\(trainer.step)"]
        for (k, v) in run { meta["run." + k] = v }
        meta["history"] = trainer.history.map {
            "\($0.step) \($0.loss) \($0.learningRate) \($0.gradientNorm) \($0.tokens)"
        }.joined(separator: ";")
        meta["evaluations"] = evaluations.map { "\($0.step) \($0.loss)" }.joined(separator: ";")
        let entries = ["adapters", "adam.m", "adam.v"].map { TensorEntry(name: $0, dtype: .F32, shape: [n]) }
        let writer = try TensorFileWriter(path: path, entries: entries, metadata: meta, compress: false)
        try writer.complete {
            for (name, p) in [("adapters", UnsafePointer(trainer.adapters.parameters)),
                              ("adam.m", UnsafePointer(trainer.optimizer.m)), ("adam.v", UnsafePointer(trainer.optimizer.v))] {
                try writer.write(name, floats: Array(UnsafeBufferPointer(start: p, count: n)))
            }
        }
    }

    /// Restores `trainer` from the checkpoint at `path`, which must be of the same `run`.
    /// Returns the held-out evaluations it recorded.
    public static func resume(path: String, trainer: LoRATrainer, run: [String: String]) throws
        -> [(step: Int, loss: Double)] {
        let file = try TensorFile(path: path)
        let meta = file.metadata
        guard meta["format"] == format else {
            throw TrainingError("\(path): not a finetune checkpoint (format \(meta["format"] ?? "none"))")
        }
        if meta["run.model"] != run["model"] {
            throw TrainingError("\(path): a checkpoint of another model (fingerprint \(meta["run.model"]?.prefix(12) ?? "none"), this model \(run["model"]!.prefix(12)))")
        }
        if meta["run.data"] != run["data"] {
            throw TrainingError("\(path): a checkpoint of a run on other data (sha256 \(meta["run.data"]?.prefix(12) ?? "none"))")
        }
        for key in run.keys.sorted() where meta["run." + key] != run[key] {
            throw TrainingError("\(path): a checkpoint of another run: \(key) was \(meta["run." + key] ?? "absent"), now \(run[key]!)")
        }
        let n = trainer.adapters.count
        guard let stepText = meta["step"], let step = Int(stepText), step >= 0, step <= trainer.options.steps else {
            throw TrainingError("\(path): no valid step in the checkpoint")
        }
        let tensors = try ["adapters", "adam.m", "adam.v"].map { name -> [Float] in
            guard let e = file.header.entries.first(where: { $0.name == name }), e.dtype == .F32, e.shape == [n] else {
                throw TrainingError("\(path): tensor '\(name)' is missing or not F32 [\(n)]")
            }
            let values = try file.floats(name)
            guard values.allSatisfy(\.isFinite) else { throw TrainingError("\(path): tensor '\(name)' is not finite") }
            return values
        }
        func fields(_ key: String, _ count: Int) throws -> [[Substring]] {
            guard let text = meta[key], !text.isEmpty else { return [] }
            return try text.split(separator: ";").map {
                let f = $0.split(separator: " ")
                guard f.count == count else { throw TrainingError("\(path): malformed \(key) in the checkpoint") }
                return f
            }
        }
        let history = try fields("history", 5).map { f -> StepRecord in
            guard let s = Int(f[0]), let l = Double(f[1]), let r = Double(f[2]), let g = Double(f[3]), let t = Int(f[4]) else {
                throw TrainingError("\(path): malformed history in the checkpoint")
            }
            return StepRecord(step: s, loss: l, learningRate: r, gradientNorm: g, tokens: t)
        }
        guard history.count == step else { throw TrainingError("\(path): the history does not match the step") }
        let evaluations = try fields("evaluations", 2).map { f -> (step: Int, loss: Double) in
            guard let s = Int(f[0]), let l = Double(f[1]) else { throw TrainingError("\(path): malformed evaluations") }
            return (s, l)
        }
        trainer.restore(step: step, parameters: tensors[0], m: tensors[1], v: tensors[2], history: history)
        return evaluations
    }
}

/// PEFT's adapter layout: `adapter_model.safetensors` (F32, PEFT's key names, metadata
/// {"format": "pt"} only, so that equal adapters give equal bytes) and `adapter_config.json`.
public enum PEFTAdapters {
    public static func write(_ adapters: LoRAAdapters, options: FinetuneOptions, directory: String,
                             baseModel: String?) throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw TrainingError("\(directory) exists and is not a directory", kind: .io) }
            let contents = (try? fm.contentsOfDirectory(atPath: directory)) ?? []
            guard Set(contents).isSubset(of: ["adapter_model.safetensors", "adapter_config.json"]) else {
                throw TrainingError("\(directory) exists and holds other files than adapters; not replacing it", kind: .io)
            }
        }
        try writeDirectoryAtomically(directory) { temporary in
            let named = adapters.named
            let writer = try TensorFileWriter(
                path: temporary + "/adapter_model.safetensors",
                entries: named.map { TensorEntry(name: $0.name, dtype: .F32, shape: $0.shape) },
                metadata: ["format": "pt"], compress: false)
            try writer.complete {
                for (name, shape, offset) in named {
                    try writer.write(name, floats: Array(UnsafeBufferPointer(start: adapters.parameters + offset,
                                                                             count: shape.reduce(1, *))))
                }
            }
            try writeText(config(adapters, options: options, baseModel: baseModel), to: temporary + "/adapter_config.json")
        }
    }

    /// `adapter_config.json`: PEFT's LoraConfig fields; ranks that differ between layers go to
    /// `rank_pattern` (module name → rank), as PEFT reads them (scaling α/r per module).
    static func config(_ adapters: LoRAAdapters, options: FinetuneOptions, baseModel: String?) -> String {
        let ranks = Set(adapters.adapters.map(\.rank))
        let rank = ranks.count == 1 ? ranks.first! : options.rank
        var pattern: [(String, JSONValue)] = []
        if ranks.count > 1 {
            for a in adapters.adapters where a.rank != rank {
                pattern.append(("model.layers.\(a.layer).\(a.projection.rawValue)", .number("\(a.rank)")))
            }
        }
        let targets = Projection.allCases.filter { p in adapters.adapters.contains { $0.projection == p } }
        let value = JSONValue.object([
            ("peft_type", .string("LORA")),
            ("task_type", .string("CAUSAL_LM")),
            ("base_model_name_or_path", baseModel.map { .string($0) } ?? .null),
            ("r", .number("\(rank)")),
            ("lora_alpha", .number(jsonNumber(options.alpha))),
            ("lora_dropout", .number(options.dropout == options.dropout.rounded() ? "\(Int(options.dropout))" : "\(options.dropout)")),  // float32 shortest: 0.05
            ("target_modules", .array(targets.map { .string($0.shortName) })),
            ("bias", .string("none")),
            ("fan_in_fan_out", .bool(false)),
            ("use_rslora", .bool(false)),
            ("use_dora", .bool(false)),
            ("init_lora_weights", .bool(true)),
            ("inference_mode", .bool(true)),
            ("modules_to_save", .null),
            ("rank_pattern", .object(pattern)),
            ("alpha_pattern", .object([])),
        ])
        return String(decoding: value.serialized(), as: UTF8.self) + "\n"
    }

    static func jsonNumber(_ x: Double) -> String {
        x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : "\(x)"
    }
}
