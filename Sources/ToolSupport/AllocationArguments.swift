import ArgumentParser

/// allocate's budget options, which are also the allocation part of `calibrate --sequential`'s
/// recipe: one spelling and one check for both (Pruning.AllocationOptions reads them).
public struct AllocationArguments: ParsableArguments {
    @Option(name: .long, help: "Fraction of decoder-layer linear parameters to remove, in [0, 1).")
    public var ratio: Double?

    @Option(name: .long, help: "UL-UM (also: uniform), UL-MM, AL-MM or AL-AM.")
    public var structure: String?

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

    public init() {}

    public func validate() throws {
        if let ratio, !(ratio >= 0 && ratio < 1) { throw ValidationError("--ratio must be in [0, 1)") }
        if let round, round < 1 { throw ValidationError("--round must be at least 1") }
        if minKeep < 0 || removeHeads < 0 { throw ValidationError("--min-keep and --remove-heads must not be negative") }
    }

    /// Any option that has no default was given.
    public var anyGiven: Bool { ratio != nil || structure != nil || prune != nil || layers != nil || round != nil }
}
