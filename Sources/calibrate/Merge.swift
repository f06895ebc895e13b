import ArgumentParser
import Calibration
import ToolSupport

/// `calibrate merge`: shards of one run into one statistics file.
struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Add the statistics of disjoint shards of the same windows (calibrate --shard i/n).",
        discussion: """
            The shards must come from the same model, data, windows and settings. When they cover every \
            shard the result is a complete statistics file (per-window sums become FLAP's fluctuation), \
            equal to one run over all windows up to float64 rounding. A missing shard is refused; with \
            --partial, a subset is merged into a shard file of their union (merged with the rest later).

            Example:
              calibrate merge s0.st.zst s1.st.zst s2.st.zst -o stats.st.zst
            """)

    @Argument(help: "Statistics files of shards.")
    var inputs: [String]

    @Flag(name: .long, help: "Merge a subset of the shards into a shard file of their union (default: every shard must be given).")
    var partial = false

    @OptionGroup var output: OutputOption
    @OptionGroup var common: CommonOptions

    func run() throws {
        try runTool("calibrate merge", common) {
            try output.checkBinary()
            guard !inputs.isEmpty else { throw UsageError("give the shard files to merge") }
            let merged = try StatisticsMerge.merge(inputs, output: output.output,
                                                   metadata: standardMetadata(tool: "calibrate merge"), partial: partial)
            if !common.quiet {
                let what = merged.shards.count == merged.count
                    ? "complete statistics" : "a shard file of shards \(merged.shards.map(String.init).joined(separator: ","))"
                printError("calibrate merge: \(merged.shards.count) of \(merged.count) shards → \(what) in \(output.output)")
            }
        }
    }
}
