/// A linear layer in PyTorch layout: `y[T, out] = x[T, in] · weight[out, in]ᵀ + bias[out]`.
public struct Linear: Sendable {
    public var weight: [Float]  // [out, in]
    public var bias: [Float]?  // [out]
    public var outFeatures: Int
    public var inFeatures: Int

    public init(weight: [Float], bias: [Float]?, outFeatures: Int, inFeatures: Int) {
        precondition(weight.count == outFeatures * inFeatures)
        precondition(bias == nil || bias!.count == outFeatures)
        self.weight = weight
        self.bias = bias
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
    }
}

/// The weights of one decoder layer, as float32 in memory.
public struct LayerWeights: Sendable {
    public var inputNorm: [Float]  // [C]
    public var q: Linear  // [H·D, C]
    public var k: Linear  // [Hkv·D, C]
    public var v: Linear  // [Hkv·D, C]
    public var o: Linear  // [C, H·D]
    public var postAttentionNorm: [Float]  // [C]
    public var gate: Linear  // [F, C]
    public var up: Linear  // [F, C]
    public var down: Linear  // [C, F]

    public init(inputNorm: [Float], q: Linear, k: Linear, v: Linear, o: Linear, postAttentionNorm: [Float],
                gate: Linear, up: Linear, down: Linear) {
        self.inputNorm = inputNorm
        self.q = q
        self.k = k
        self.v = v
        self.o = o
        self.postAttentionNorm = postAttentionNorm
        self.gate = gate
        self.up = up
        self.down = down
    }

    /// The seven projections, in `Projection.allCases` order, for in-place access.
    public static let projections: [WritableKeyPath<LayerWeights, Linear>] = [\.q, \.k, \.v, \.o, \.gate, \.up, \.down]

    public func linear(_ p: Projection) -> Linear {
        switch p {
        case .q: return q
        case .k: return k
        case .v: return v
        case .o: return o
        case .gate: return gate
        case .up: return up
        case .down: return down
        }
    }

    public mutating func setLinear(_ p: Projection, _ value: Linear) {
        switch p {
        case .q: q = value
        case .k: k = value
        case .v: v = value
        case .o: o = value
        case .gate: gate = value
        case .up: up = value
        case .down: down = value
        }
    }
}
