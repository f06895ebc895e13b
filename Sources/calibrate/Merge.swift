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
            equal to one run over all windows up to float64 rounding; otherwise it is a shard file of \
            their union.

            Example:
              calibrate merge s0.st.zst s1.st.zst s2.st.zst -o stats.st.zst
            """)

    @Argument(help: "Statistics files of shards.")
    var inputs: [String]

    @OptionGroup var output: OutputOption
    @OptionGroup var common: CommonOptions

    func run() throws {
        try runTool("calibrate merge", common) {
            try output.checkBinary()
            guard !inputs.isEmpty else { throw UsageError("give the shard files to merge") }
            try StatisticsMerge.merge(inputs, output: output.output, metadata: standardMetadata(tool: "calibrate merge"))
        }
    }
}
