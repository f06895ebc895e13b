import ArgumentParser

/// allocate's budget options, which are also the allocation part of `calibrate --sequential`'s
/// recipe: one spelling and one check for both (Pruning.AllocationOptions reads them).
public struct AllocationArguments: ParsableArguments {
    @Option(name: .long, help: "Fraction of decoder-layer linear parameters to remove, in [0, 1).")
    public var ratio: Double?

    @Option(name: .long, help: "UL-UM (also: uniform), UL-MM, AL-MM or AL-AM.")
    public var structure: String?

    @Option(name: .long, help: ArgumentHelp("Instead of --structure: every layer keeps as many attention units and MLP channels as this plan's layer, the best by these scores (budgets fixed elsewhere, e.g. CFSP's angular ones for calibrate --sequential).", valueName: "plan"))
    public var widths: String?

    @Option(name: .long, help: "Attention unit: group (a KV head with its query heads), head (one query head from every group at a time) or vo (FASP: one value dimension, a v_proj row with the o_proj columns that read it).")
    public var attentionUnit: String = "group"

    @Option(name: .long, help: "Unit kinds to prune: attention, mlp or attention,mlp.")
    public var prune: String?

    @Option(name: .long, help: "Prune only layers A-B (inclusive, from 0).")
    public var layers: String?

    @Option(name: .long, help: "Keep a multiple of K MLP channels per layer.")
    public var round: Int?

    @Option(name: .long, help: "Every pruned layer keeps at least this many attention units and MLP channels.")
    public var minKeep: Int = 1

    @Option(name: .long, help: "Attention units to remove for UL-MM and AL-MM (FLAP's remove_heads).")
    public var removeHeads: Int = 0

    @Flag(name: .long, help: "Write the plan even when it removes less than half the ratio asked, or more than 5 points over it (--min-keep, --round or the units' granularity).")
    public var allowRatioMiss = false

    public init() {}

    public func validate() throws {
        if let ratio, !(ratio >= 0 && ratio < 1) { throw ValidationError("--ratio must be in [0, 1)") }
        if let round, round < 1 { throw ValidationError("--round must be at least 1") }
        if minKeep < 0 || removeHeads < 0 { throw ValidationError("--min-keep and --remove-heads must not be negative") }
        if let round, round > 1 << 24 { throw ValidationError("--round must be at most 16777216") }
        if minKeep > 1 << 24 { throw ValidationError("--min-keep must be at most 16777216") }
    }

    /// Refuses a plan that removes less than half the fraction asked or more than 5 points over it
    /// (what --min-keep, --round or coarse units can do), unless --allow-ratio-miss.
    public func checkAchieved(_ achieved: Double) throws {
        guard let ratio, !allowRatioMiss else { return }
        if achieved < ratio / 2 || achieved > ratio + 0.05 {
            throw UsageError(String(format: "the plan removes %.4f of the decoder-layer parameters for %.4f asked (--min-keep, --round or the units' size); --allow-ratio-miss writes it anyway", achieved, ratio))
        }
    }

    /// Any option that has no default was given.
    public var anyGiven: Bool { ratio != nil || structure != nil || widths != nil || prune != nil || layers != nil || round != nil }
}
