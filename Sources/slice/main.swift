import ArgumentParser
import Foundation
import LlamaModel
import Pruning
import TensorIO
import ToolSupport

struct Slice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "slice",
        abstract: "Remove the heads, KV groups and MLP channels a plan drops: a physically smaller model.",
        discussion: """
            Layer by layer, streaming: q rows and o_proj columns of dropped query heads, k and v rows \
            of dropped KV heads, gate/up rows and down_proj columns of dropped channels (their bias \
            entries with them; o_proj and down_proj biases stay). The per-layer widths go into the \
            configuration. The plan must have been made from this model's statistics (fingerprint).

            Example:
              slice --model smollm2.st.zst --plan plan.st.zst -o sliced.st.zst
            """)

    @Option(name: .long, help: "The dense model: a GGUF file, a Hugging Face directory, a PruneKit model file, or -.")
    var model: String

    @Option(name: .long, help: "The plan (allocate).")
    var plan: String

    @Option(name: .long, help: "Element type of the output weights: auto (the source's), f32, f16 or bf16.")
    var dtype: String = "auto"

    @Option(name: [.short, .long], help: "Output model file (.st.zst compressed), or - for standard output.")
    var output: String

    @OptionGroup var common: CommonOptions

    func run() throws {
        try runToolBody("slice") {
            installInterruptCleanup()
            try checkBinaryOutput(output)
            guard let weightType = WeightType(rawValue: dtype) else {
                throw UsageError("--dtype must be auto, f32, f16 or bf16, got '\(dtype)'")
            }
            let planFile = try PlanFile(path: plan)
            let model = try Model.open(self.model)
            let fingerprint = try model.fingerprint()
            guard planFile.metadata["fingerprint"] == fingerprint else {
                throw SliceError("\(plan): a plan for another model (fingerprint \(planFile.metadata["fingerprint"]?.prefix(12) ?? "none"), the model's \(fingerprint.prefix(12)))")
            }
            let c = model.config
            try planFile.check(against: c, name: plan)
            let sliced = Slicing.config(c, plan: planFile)
            var tensors: [(name: String, shape: [Int])] = [(TensorNames.embedding, model.shape(TensorNames.embedding)!)]
            for l in 0..<c.numLayers {
                tensors.append((TensorNames.inputNorm(l), [c.hiddenSize]))
                for p in Projection.allCases {
                    if p == .gate { tensors.append((TensorNames.postAttentionNorm(l), [c.hiddenSize])) }
                    let (rows, cols) = TensorNames.projectionShape(p, config: sliced, layer: l)
                    tensors.append((TensorNames.weight(l, p), [rows, cols]))
                    if model.hasBias(l, p) { tensors.append((TensorNames.bias(l, p), [rows])) }
                }
            }
            tensors.append((TensorNames.finalNorm, [c.hiddenSize]))
            if !c.tieWordEmbeddings { tensors.append((TensorNames.head, model.shape(TensorNames.head)!)) }
            var meta = standardMetadata(tool: "slice")
            meta["fingerprint"] = Fingerprint.derived(from: fingerprint, stage: "slice", inputs: [planFile.digest])
            meta["parent_fingerprint"] = fingerprint
            meta["plan_digest"] = planFile.digest
            let writer = try ModelWriter(path: output, config: sliced, tensors: tensors,
                                         dtype: { weightType.dtype(source: model.storageType($0)) },
                                         tokenizerJSON: model.tokenizerJSON, metadata: meta)
            let progress = Progress("slice", total: c.numLayers, unit: "layers", quiet: common.quiet)
            var after = 0
            try writer.complete {
                func put(_ name: String, _ values: [Float]) throws {
                    after += values.count
                    try writer.write(name, values)
                }
                try put(TensorNames.embedding, try model.embedding())
                for l in 0..<c.numLayers {
                    for (name, values) in Slicing.layer(l, weights: try model.layer(l), plan: planFile.layers[l], config: c) {
                        try put(name, values)
                    }
                    progress.update(l + 1)
                }
                try put(TensorNames.finalNorm, try model.finalNorm())
                if let head = try model.head() { try put(TensorNames.head, head) }
            }
            progress.finish()
            if !common.quiet {
                let before = model.totalParameters
                printError(String(format: "slice: %d → %d parameters (%.2f%% removed; decoder layers %.2f%%)", before, after,
                                  100 * Double(before - after) / Double(before),
                                  100 * Double(before - after) / Double(model.layerLinearParameters)))
            }
        }
    }
}

Slice.main()
